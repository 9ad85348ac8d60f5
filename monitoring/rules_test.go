package monitoring

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// lookPromtool returns promtool's path, and fails the test without it: a rule test that
// cannot run must not pass.
func lookPromtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("no promtool on PATH: install it (Debian package prometheus); .ci/run does")
	}
	return path
}

// promtool runs promtool (Debian package prometheus; .ci/run installs it) with args.
func promtool(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(lookPromtool(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestAlertRules: the rules and the configuration that loads them are valid, and the cases of
// alerts_test.yml hold: each alert fires when it should and stays quiet when it should not.
func TestAlertRules(t *testing.T) {
	promtool(t, "check", "rules", "alerts.yml")
	promtool(t, "check", "config", "prometheus.yml")
	out := promtool(t, "test", "rules", "alerts_test.yml")
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules:\n%s", out)
	}
}

// TestAlertRulesCanFail: a case that expects an alert the series do not cause fails, so the
// test above is not one that cannot fail. The failure must be promtool's verdict on that case:
// promtool also exits 1 when it cannot read its input.
func TestAlertRulesCanFail(t *testing.T) {
	bin := lookPromtool(t)
	dir := t.TempDir()
	rules, err := filepath.Abs("alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	wrong := `rule_files: [` + rules + `]
evaluation_interval: 15s
tests:
  - interval: 30s
    input_series:
      - series: 'ledger_projection_lag_seconds{projection="balance",version="1"}'
        values: '0 1 2 3 4 5 6'
    alert_rule_test:
      - eval_time: 3m
        alertname: LedgerReaderLagging
        exp_alerts:
          - exp_labels: {severity: warning, projection: balance}
`
	path := dir + "/wrong_test.yml"
	if err := os.WriteFile(path, []byte(wrong), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "test", "rules", path).CombinedOutput()
	if err == nil {
		t.Fatalf("a lag of 6 s made LedgerReaderLagging fire:\n%s", out)
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("promtool test rules: %v, want exit status 1\n%s", err, out)
	}
	for _, want := range []string{"FAILED:", "alertname: LedgerReaderLagging, time: 3m", "got:[]"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("promtool failed, but not on the case (no %q):\n%s", want, out)
		}
	}
}
