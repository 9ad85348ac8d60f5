package main

import (
	"sync"
	"sync/atomic"
)

// workers runs tasks on goroutines that are kept, once they finish a task, for the next one. A
// request's goroutine grows its stack to the depth of the HTTP client; a new goroutine for
// every request had the runtime grow and copy a stack on every request, about a tenth of the
// generator's CPU.
type workers[T any] struct {
	do    func(T)
	tasks chan T // unbuffered: a send succeeds only when a worker is idle
	wg    sync.WaitGroup

	spawned atomic.Int64 // goroutines started
}

func newWorkers[T any](do func(T)) *workers[T] {
	return &workers[T]{do: do, tasks: make(chan T)}
}

// start runs t on an idle worker, or on a new one when none is idle: it never waits, so the
// dispatcher keeps to its timetable however many tasks are running.
func (w *workers[T]) start(t T) {
	select {
	case w.tasks <- t:
	default:
		w.wg.Add(1)
		w.spawned.Add(1)
		go w.work(t)
	}
}

func (w *workers[T]) work(t T) {
	defer w.wg.Done()
	for ok := true; ok; t, ok = <-w.tasks {
		w.do(t)
	}
}

// wait waits until every task started has finished and ends the workers; start must not be
// called after it.
func (w *workers[T]) wait() {
	close(w.tasks)
	w.wg.Wait()
}
