//go:build race

package control

// raceEnabled: the race detector's instrumentation allocates too, so allocation budgets do
// not apply.
const raceEnabled = true
