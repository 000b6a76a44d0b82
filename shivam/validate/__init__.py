"""The empirical validator: measure on a GPU exactly the workloads the simulator predicts."""
