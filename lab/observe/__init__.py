"""Reading a running lab, never changing it: sessions, best paths and client identity,
kernel state, `status`, convergence, catchment."""
