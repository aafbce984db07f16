"""The provisioned Grafana dashboard of rootfree's per-study Ray metrics (docker/grafana): it is
wired into the compose file's Grafana beside Ray's own dashboards, and it plots exactly the series
service/followers/ray_metrics.py exports (Ray's Prometheus export prefixes them with `ray_`)."""

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "docker" / "grafana"


def test_dashboard_plots_the_exported_series():
    source = (ROOT / "service" / "followers" / "ray_metrics.py").read_text()
    exported = set(re.findall(r'Gauge\("(rootfree_\w+)"', source))
    assert exported == {"rootfree_study_trials", "rootfree_study_epochs_reported", "rootfree_study_best_objective"}
    board = json.loads((GRAFANA / "dashboards" / "rootfree-studies.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    plotted = {m for e in exprs for m in re.findall(r"rootfree_\w+", e)}
    assert plotted == exported
    assert all("$study" in e for e in exprs)  # every panel follows the study picker
    study_var = next(v for v in board["templating"]["list"] if v["name"] == "study")
    assert "ray_rootfree_study_trials" in study_var["query"]


def test_grafana_provisions_ray_and_rootfree_dashboards():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    g = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in g["volumes"]}
    provisioning = g["environment"]["GF_PATHS_PROVISIONING"]
    assert mounts[provisioning] == "./docker/grafana/provisioning"
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "providers.yml").read_text())["providers"]
    paths = {p["name"]: p["options"]["path"] for p in providers}
    assert paths["Ray"] == "/tmp/ray/session_latest/metrics/grafana/dashboards" and "/tmp/ray" in mounts
    assert mounts[paths["rootfree"]] == "./docker/grafana/dashboards"
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert ds[0]["url"] == "http://prometheus:9090" and ds[0]["name"] == "Prometheus"
