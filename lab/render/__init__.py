"""The daemons the lab runs: each renders its config from a template (pure), checks it with
the daemon's own dry run, and says how to start it in its node's namespace; `launch`
starts them in order; `credentials` makes the lab's trust material."""
