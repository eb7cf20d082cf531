"""The verbs that change a lab: up and down, faults, drain, tokens."""
