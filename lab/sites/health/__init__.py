"""anycast-healthd: a site's health checks, deciding whether its anycast route is up.

Fail-closed by design. The daemon never talks BGP: it controls `lab.sites.speaker.api` (the
"shim", ExaBGP's API process) over a unix socket, and the shim runs in watchdog mode:

* the shim withdraws when it (re)starts, when the daemon's connection closes (exit,
  crash, SIGKILL: the kernel closes the socket) and when no sign of life has come from
  the daemon for `--watchdog-ms` (daemon frozen or hung);
* the daemon feeds the watchdog every watchdog/3 from its main loop (never from a check:
  each check runs in its own worker thread with its own timeout) by writing the time
  into a beat cell it shares with the shim (a sealed memfd passed once over the socket:
  no syscall, and the shim sleeps until the watchdog could expire), reconnects when the
  shim restarts, and then starts from "withdrawn";
* a (re)started daemon announces only once every required check has passed `rise`
  times; going down is never delayed, re-announcing waits for the hold-down.

Worst case from a frozen daemon to the route leaving ExaBGP: the watchdog (300 ms in
the lab) + ExaBGP's withdraw latency (3-4 ms measured); a dead daemon: ~ExaBGP's
latency alone.

Modules: `config` (pydantic model, defaults), `state` (pure state machine), `checks`
(dns, introspect, tcp, exec), `daemon` (the loop), `metrics` (Prometheus), `report`
(event log, state file), `cli` (entry point).

Outside the lab, with any ExaBGP 5:

    process healthd-shim {
        run /usr/bin/python3 -m lab.sites.speaker.api --control /run/anycast/speaker.sock
            --watchdog-ms 300 --route 203.0.113.53/32 192.0.2.10;
        encoder text;
    }
    neighbor ... { api { processes [ healthd-shim ]; } }

(one line in the real file), then, in the same network namespace as the services:

    python3 -m lab.sites.health --config /etc/anycast/healthd.json

with `shim_socket` in the config set to the `--control` path. `touch` the config's
`drain_file` to drain (announce with GRACEFUL_SHUTDOWN, withdraw after
`drain_delay_ms`), remove it to undrain; `kill -HUP` makes the daemon look at once.
"""
