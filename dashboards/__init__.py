"""tidegate's Grafana dashboards as code.

``dashboards/build.py`` builds them with Grafana's typed builder
(grafana-foundation-sdk); ``python -m dashboards`` writes the JSON Grafana
loads to ``dashboards/json/`` (committed; a test checks it is what the code
generates). ``provisioning/`` holds Grafana's datasource and dashboard
provider files, ``prometheus.yml`` a scrape config for ``tidegate serve
--metrics-port``. See README.md here.
"""
