"""Programs that run inside a site's namespace (health daemon, speaker API process,
introspection service). They import only `lab.shared`."""
