"""Example plugins for rootfree: a workload (`digits_mlp`) and an optimizer (`ifadagrad`)."""
