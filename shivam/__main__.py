from shivam.cli import main

raise SystemExit(main())
