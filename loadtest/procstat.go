package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicks is USER_HZ, the unit of CPU times in /proc/<pid>/stat: 100 on every Linux
// architecture Go supports.
const clockTicks = 100

// procSample is one reading of a process's counters.
type procSample struct {
	at       time.Time
	cpu      time.Duration // user + system since the process started
	rssBytes int64
}

// readProc reads pid's CPU time from /proc/<pid>/stat and resident set from /proc/<pid>/status.
func readProc(pid int) (procSample, error) {
	s := procSample{at: time.Now()}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	if s.cpu, err = parseStatCPU(stat); err != nil {
		return s, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	if s.rssBytes, err = parseStatusRSS(status); err != nil {
		return s, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	return s, nil
}

// parseStatCPU returns utime + stime (fields 14 and 15) of a /proc/<pid>/stat line. The command
// name (field 2) may hold spaces and parentheses, so fields are counted after its last ')'.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("no command name")
	}
	f := strings.Fields(string(stat[i+1:])) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 13", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cpu time %q: %w", s, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// parseStatusRSS returns VmRSS from /proc/<pid>/status, in bytes.
func parseStatusRSS(status []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("VmRSS %q: want \"<n> kB\"", rest)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmRSS %q: %w", rest, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no VmRSS line")
}

// ProcReport is a process's resource use during a phase.
type ProcReport struct {
	PID        int     `json:"pid"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUCores is CPU time over wall time: 1.5 means one and a half cores busy on average.
	CPUCores    float64 `json:"cpu_cores"`
	RSSStartMiB float64 `json:"rss_start_mib"`
	RSSMaxMiB   float64 `json:"rss_max_mib"`
	RSSEndMiB   float64 `json:"rss_end_mib"`
	Error       string  `json:"error,omitempty"`
}

// procWatch samples a process every second from start until stop, for the peak resident set.
type procWatch struct {
	pid    int
	first  procSample
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	maxRSS int64
	err    error
}

func watchProc(pid int) *procWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &procWatch{pid: pid, cancel: cancel, done: make(chan struct{})}
	w.first, w.err = readProc(pid)
	w.maxRSS = w.first.rssBytes
	go func() {
		defer close(w.done)
		for (realClock{}).Sleep(ctx, time.Second) {
			w.sample()
		}
	}()
	return w
}

func (w *procWatch) sample() procSample {
	s, err := readProc(w.pid)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		if w.err == nil {
			w.err = err
		}
		return s
	}
	w.maxRSS = max(w.maxRSS, s.rssBytes)
	return s
}

// stop ends the sampling and reports the use since watchProc.
func (w *procWatch) stop() *ProcReport {
	w.cancel()
	<-w.done
	last := w.sample()
	w.mu.Lock()
	defer w.mu.Unlock()
	rep := &ProcReport{PID: w.pid}
	if w.err != nil {
		rep.Error = w.err.Error()
		return rep
	}
	cpu := last.cpu - w.first.cpu
	wall := last.at.Sub(w.first.at)
	rep.CPUSeconds = round2(cpu.Seconds())
	if wall > 0 {
		rep.CPUCores = round2(cpu.Seconds() / wall.Seconds())
	}
	rep.RSSStartMiB = mib(w.first.rssBytes)
	rep.RSSMaxMiB = mib(w.maxRSS)
	rep.RSSEndMiB = mib(last.rssBytes)
	return rep
}

// machineSample is one reading of the whole machine's CPU counters from /proc/stat, in ticks
// summed over all CPUs.
type machineSample struct {
	busy, total int64
	cpus        int
}

// readMachine reads the machine's CPU counters.
func readMachine() (machineSample, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineSample{}, err
	}
	s, err := parseProcStat(b)
	if err != nil {
		return s, fmt.Errorf("/proc/stat: %w", err)
	}
	return s, nil
}

// parseProcStat reads the aggregate "cpu" line of /proc/stat (user nice system idle iowait irq
// softirq steal guest guest_nice) and counts the per-CPU "cpuN" lines. Busy is user + nice +
// system + irq + softirq + steal; idle and iowait are not busy. Guest time is already counted in
// user and nice, so it is left out of both sums. Older kernels print fewer fields; the missing
// ones count as zero.
func parseProcStat(stat []byte) (machineSample, error) {
	var s machineSample
	found := false
	sc := bufio.NewScanner(bytes.NewReader(stat))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || !strings.HasPrefix(f[0], "cpu") {
			continue
		}
		if f[0] != "cpu" {
			if _, err := strconv.Atoi(f[0][3:]); err == nil {
				s.cpus++
			}
			continue
		}
		if len(f) < 5 {
			return s, fmt.Errorf("cpu line has %d fields, want at least 4 counters", len(f))
		}
		var ticks [8]int64 // user nice system idle iowait irq softirq steal
		for i := range min(len(f)-1, len(ticks)) {
			n, err := strconv.ParseInt(f[i+1], 10, 64)
			if err != nil {
				return s, fmt.Errorf("cpu counter %q: %w", f[i+1], err)
			}
			ticks[i] = n
		}
		s.busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7]
		s.total = s.busy + ticks[3] + ticks[4]
		found = true
	}
	switch {
	case !found:
		return s, fmt.Errorf("no cpu line")
	case s.cpus == 0:
		return s, fmt.Errorf("no per-CPU lines")
	}
	return s, nil
}

// MachineReport is the whole machine's CPU use during a phase: the server, the generator,
// PostgreSQL and whatever else runs there.
type MachineReport struct {
	CPUs int `json:"cpus"`
	// BusyCores is busy ticks over all ticks times CPUs: 1.5 means one and a half of the
	// machine's cores busy on average.
	BusyCores float64 `json:"busy_cores"`
	// OtherCores is BusyCores less the server's and the generator's CPU: PostgreSQL, the
	// kernel's work for everyone, and every other process.
	OtherCores float64 `json:"other_cores"`
	Error      string  `json:"error,omitempty"`
}

// machineWatch measures the machine's CPU from watchMachine until stop.
type machineWatch struct {
	first machineSample
	err   error
}

func watchMachine() *machineWatch {
	s, err := readMachine()
	return &machineWatch{first: s, err: err}
}

// stop reports the machine's CPU since watchMachine, less the server's and the generator's.
func (w *machineWatch) stop(server, generator *ProcReport) *MachineReport {
	if w.err != nil {
		return &MachineReport{Error: w.err.Error()}
	}
	last, err := readMachine()
	if err != nil {
		return &MachineReport{Error: err.Error()}
	}
	return machineCPU(w.first, last, server, generator)
}

// machineCPU reports the machine's CPU between two readings; server (nil when not watched) and
// generator are subtracted from it for the rest.
func machineCPU(first, last machineSample, server, generator *ProcReport) *MachineReport {
	rep := &MachineReport{CPUs: last.cpus}
	total := last.total - first.total
	if total <= 0 {
		rep.Error = "no CPU time passed"
		return rep
	}
	rep.BusyCores = round2(float64(last.busy-first.busy) / float64(total) * float64(last.cpus))
	// From the rounded figures, so that the printed numbers add up.
	other := rep.BusyCores
	for _, p := range []*ProcReport{server, generator} {
		if p != nil && p.Error == "" {
			other -= p.CPUCores
		}
	}
	rep.OtherCores = max(round2(other), 0)
	return rep
}

func mib(b int64) float64 { return round2(float64(b) / (1 << 20)) }

func round2(f float64) float64 { return math.Round(f*100) / 100 }
