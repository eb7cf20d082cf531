"""What a site's introspection service says of its connections: its `/metrics` lines
about them (held per listener, the most one client has held at once, saturation,
refusals per reason), asked on the health listener inside the site's namespace (clients
cannot use that listener up, so it answers even when the site is saturated). Reading only.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from lab.model.plan import NodePlan
from lab.render.credentials import SERVICE_NAME, paths
from lab.render.introspect import HEALTH_ADDRESS, HEALTH_PORT
from lab.shared import https

TIMEOUT_S = 2.0
PREFIX = "anycast_connections_"


def connection_metrics(lab_dir: Path, site: NodePlan) -> dict[str, float]:
    """{sample name with its labels but the site's: value}, e.g. ``client_peak``,
    ``held{listener=client}``; OSError / ValueError when the service does not answer."""
    answer = https.request(HEALTH_ADDRESS, HEALTH_PORT, "GET", "/metrics",
                           ca_file=paths(lab_dir).ca_cert, server_name=SERVICE_NAME,
                           netns=site.netns, timeout_s=TIMEOUT_S)
    if answer.status != 200:
        raise ValueError(f"/metrics answered HTTP {answer.status}")
    return parse(answer.raw.decode())


def parse(text: str) -> dict[str, float]:
    """The connection samples of a /metrics text, keyed as `connection_metrics` says."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.startswith(PREFIX):
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items())
                              if k != "site")
            name = sample.name[len(PREFIX):]
            out[f"{name}{{{labels}}}" if labels else name] = sample.value
    return out
