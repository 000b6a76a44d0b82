from shivam.cli.main import main

raise SystemExit(main())
