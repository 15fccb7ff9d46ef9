#!/bin/sh
# Prints deploy/prometheus/alerts.yml and recording.yml as one PrometheusRule (Prometheus Operator):
#   sh deploy/kubernetes/prometheusrule.sh | kubectl apply -f -
# The rules are the files' own, so the tested rules are the deployed ones.
set -eu
rules="$(dirname "$0")/../prometheus"
cat <<'HEAD'
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: replscope
  labels:
    release: prometheus   # match your Prometheus's ruleSelector
spec:
  groups:
HEAD
for f in alerts recording; do
  # The items under `groups:`, two spaces deeper.
  sed -n '/^groups:/,$p' "$rules/$f.yml" | tail -n +2 | sed 's/^/  /'
done
