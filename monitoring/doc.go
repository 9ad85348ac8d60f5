// Package monitoring holds what operators run beside the ledger: the Prometheus configuration
// and alert rules for the projectors and the event relay, and the Grafana dashboard. It has no
// code; its test checks the rules and the configuration with promtool.
package monitoring
