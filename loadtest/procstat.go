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

func mib(b int64) float64 { return round2(float64(b) / (1 << 20)) }

func round2(f float64) float64 { return math.Round(f*100) / 100 }
