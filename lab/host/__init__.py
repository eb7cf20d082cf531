"""This machine: environment checks, the ownership journal, the process runner, namespaces
and links, safe writes, the lab lock, BIRD's control client; the labs that exist here."""
