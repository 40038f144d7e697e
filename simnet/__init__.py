"""simnet: many real llamanet nodes on one machine, simulated agents, churn and
misbehaviour, and a report of what happened.  What it runs is ``llamanet``."""
