package eventstore

// HoldGroupWriters takes every group writer slot of s, so that appends queue up; release lets
// them go. Tests use it to make a group of a known size.
func HoldGroupWriters(s *Store) (release func()) { return s.group.batch.Hold() }

// QueuedAppends returns how many appends wait for a group writer.
func QueuedAppends(s *Store) int { return s.group.batch.Queued() }
