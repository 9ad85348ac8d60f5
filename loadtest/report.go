package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// printReport writes the result as tables for people.
func printReport(w io.Writer, res *Result) {
	fmt.Fprintf(w, "\n== loadtest %s against %s: %d employees", res.Profile, res.Target, res.Users)
	if res.HotShare > 0 {
		fmt.Fprintf(w, ", %.0f%% of requests by one", res.HotShare*100)
	}
	fmt.Fprintf(w, "; seed %d\n", res.Seed)
	fmt.Fprintf(w, "   SLO per phase: p99 ≤ %.0f ms from the scheduled time, errors ≤ %s\n", res.SLO.P99Ms, percent(res.SLO.MaxErrors))

	if res.Warmup != nil {
		fmt.Fprint(w, "\nwarm-up, not judged:")
		printPhase(w, *res.Warmup)
	}
	if len(res.Phases) > 1 {
		printSteps(w, res.Phases)
	}
	for _, ph := range detailPhases(res) {
		printPhase(w, ph)
	}
	if res.MaxHeldRate != nil {
		if *res.MaxHeldRate > 0 {
			fmt.Fprintf(w, "\nhighest rate that held: %g req/s\n", *res.MaxHeldRate)
		} else {
			fmt.Fprintln(w, "\nhighest rate that held: none (the first step missed)")
		}
	}
	if inv := res.Invariant; inv != nil {
		state := "HOLDS"
		if !inv.Holds {
			state = "BROKEN"
		}
		fmt.Fprintf(w, "\nbank invariant: %s (%d accounts, %d events)\n", state, inv.Accounts, inv.Events)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, c := range inv.Checks {
			mark := "ok"
			if !c.OK {
				mark = "FAIL"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", mark, c.Name, c.Detail)
		}
		tw.Flush()
	}
	for _, n := range res.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	switch {
	case res.Interrupted:
		fmt.Fprintln(w, "\nresult: INTERRUPTED")
	case res.Passed:
		fmt.Fprintln(w, "\nresult: PASSED")
	default:
		fmt.Fprintln(w, "\nresult: FAILED")
	}
}

// detailPhases are the phases shown in full: all of a fixed-rate run; for a stress run the
// highest that held and the first that missed.
func detailPhases(res *Result) []Phase {
	if res.MaxHeldRate == nil {
		return res.Phases
	}
	var out []Phase
	for i, ph := range res.Phases {
		if !ph.Held {
			if i > 0 {
				out = append(out, res.Phases[i-1])
			}
			return append(out, ph)
		}
	}
	if n := len(res.Phases); n > 0 {
		out = append(out, res.Phases[n-1])
	}
	return out
}

func printSteps(w io.Writer, phases []Phase) {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "step\ttarget/s\tachieved/s\tp50 ms\tp90 ms\tp99 ms\tmax ms\terrors\tserver cpu\tmachine cpu\t\t")
	for _, ph := range phases {
		fmt.Fprintf(tw, "%d\t%g\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%s\t%s\t%s\t\t%s\n", ph.Number, ph.TargetRate, ph.Total.RPS,
			ph.Total.Latency.P50Ms, ph.Total.Latency.P90Ms, ph.Total.Latency.P99Ms, ph.Total.Latency.MaxMs,
			percent(ph.ErrorRate), cores(ph.Server), machineCores(ph.Machine), ph.Verdict)
	}
	tw.Flush()
}

func printPhase(w io.Writer, ph Phase) {
	fmt.Fprintf(w, "\nphase %d: %g req/s for %s: %d scheduled, %d sent, %d dropped, %.1f s elapsed\n",
		ph.Number, ph.TargetRate, time.Duration(ph.DurationS*float64(time.Second)), ph.Scheduled, ph.Sent, ph.Dropped, ph.ElapsedS)
	fmt.Fprintf(w, "  %s\n\n", ph.Verdict)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "op\trequests\treq/s\tok\tnot enough coin\terrors\tp50 ms\tp90 ms\tp99 ms\tmax ms\t")
	for _, o := range append(ph.Ops[:len(ph.Ops):len(ph.Ops)], ph.Total) {
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%d\t%d\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t\n", o.Op, o.Requests, o.RPS, o.OK, o.NotEnoughCoin,
			o.Errors, o.Latency.P50Ms, o.Latency.P90Ms, o.Latency.P99Ms, o.Latency.MaxMs)
	}
	tw.Flush()

	var errs []string
	for _, o := range ph.Ops {
		for _, e := range o.ErrorsBy {
			status := fmt.Sprint(e.Status)
			if e.Status == 0 {
				status = "no answer"
			}
			errs = append(errs, fmt.Sprintf("  %d\t%s\t%s\t%s", e.Count, o.Op, status, e.Message))
		}
	}
	if ph.Dropped > 0 {
		errs = append(errs, fmt.Sprintf("  %d\t(any)\tdropped\tdue while the in-flight limit was reached", ph.Dropped))
	}
	if len(errs) > 0 {
		fmt.Fprintln(w, "\n  errors:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, strings.Join(errs, "\n"))
		tw.Flush()
	}

	fmt.Fprintln(w)
	if l := ph.Lag; l != nil {
		lagLine(w, "projection lag", strings.Join(l.Groups, "+")+" applied", l)
	}
	if l := ph.RelayLag; l != nil {
		lagLine(w, "JetStream lag", "readable from JetStream", l)
	}
	if s := ph.Server; s != nil {
		fmt.Fprintf(w, "  server (pid %d): %s\n", s.PID, procLine(s))
	}
	if g := ph.Generator; g != nil {
		fmt.Fprintf(w, "  load generator: %s; sent p50 %.2f ms, p99 %.2f ms, max %.1f ms after the scheduled time\n",
			procLine(g), ph.StartDelay.P50Ms, ph.StartDelay.P99Ms, ph.StartDelay.MaxMs)
	}
	if m := ph.Machine; m != nil {
		fmt.Fprintf(w, "  machine: %s\n", machineLine(m, ph.Server, ph.Generator))
	}
}

// machineLine reads e.g. "1.89 of 2 cores busy (server 0.59, generator 0.23, everything else
// 1.07)"; a process that was not measured is left out of the parts.
func machineLine(m *MachineReport, server, generator *ProcReport) string {
	if m.Error != "" {
		return "CPU not measured: " + m.Error
	}
	var parts []string
	if server != nil && server.Error == "" {
		parts = append(parts, fmt.Sprintf("server %.2f", server.CPUCores))
	}
	if generator != nil && generator.Error == "" {
		parts = append(parts, fmt.Sprintf("generator %.2f", generator.CPUCores))
	}
	parts = append(parts, fmt.Sprintf("everything else %.2f", m.OtherCores))
	return fmt.Sprintf("%.2f of %d cores busy (%s)", m.BusyCores, m.CPUs, strings.Join(parts, ", "))
}

func procLine(p *ProcReport) string {
	if p.Error != "" {
		return "not measured: " + p.Error
	}
	return fmt.Sprintf("CPU %.2f cores (%.1f s), RSS %.1f MiB at start, %.1f max, %.1f at end",
		p.CPUCores, p.CPUSeconds, p.RSSStartMiB, p.RSSMaxMiB, p.RSSEndMiB)
}

func cores(p *ProcReport) string {
	if p == nil || p.Error != "" {
		return "-"
	}
	return fmt.Sprintf("%.2f", p.CPUCores)
}

func machineCores(m *MachineReport) string {
	if m == nil || m.Error != "" {
		return "-"
	}
	return fmt.Sprintf("%.2f", m.BusyCores)
}

// lagLine prints one lag report: title, then what the lag runs to from the 200.
func lagLine(w io.Writer, title, until string, l *LagReport) {
	fmt.Fprintf(w, "  %s (1 in %d commands, 200 → %s): %d samples, p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms",
		title, l.SampleEvery, until, l.Count, l.P50Ms, l.P90Ms, l.P99Ms, l.MaxMs)
	if l.Skipped+l.TimedOut+l.Failed > 0 {
		fmt.Fprintf(w, "; %d skipped (too many in flight), %d timed out, %d failed", l.Skipped, l.TimedOut, l.Failed)
	}
	if l.LastErr != "" {
		fmt.Fprintf(w, " (%s)", l.LastErr)
	}
	fmt.Fprintln(w)
}
