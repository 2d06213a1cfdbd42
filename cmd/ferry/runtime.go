package main

import (
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"

	"github.com/ferryrelay/ferry/config"
)

// defaultGOGC is Ferry's GC target when neither runtime.gogc nor GOGC set one: its heap is
// long-lived allocation state and the relay path allocates nothing per packet, so a tighter
// target costs little CPU and saves memory per allocation (README, Performance).
const defaultGOGC = 50

// setRuntime applies runtime.gogc and runtime.memory_limit.
func setRuntime(f *config.File) {
	if gc := gcPercent(f.Runtime.GOGC, os.Getenv("GOGC")); gc > 0 {
		debug.SetGCPercent(gc)
	}
	if limit := int64(f.Runtime.MemoryLimit); limit > 0 {
		debug.SetMemoryLimit(limit)
	}
}

// gcPercent picks the GC target: runtime.gogc when set, else the GOGC environment variable
// (which the Go runtime already applied: 0 is returned to leave it), else defaultGOGC.
func gcPercent(configured int, env string) int {
	switch {
	case configured > 0:
		return configured
	case env != "":
		return 0
	default:
		return defaultGOGC
	}
}

// gcSetting describes the GC target in effect, for the start-up line.
func gcSetting(configured int) string {
	if gc := gcPercent(configured, os.Getenv("GOGC")); gc > 0 {
		return strconv.Itoa(gc)
	}
	return os.Getenv("GOGC") + " (GOGC)"
}

// memLimitSetting describes the Go memory limit in effect, for the start-up line.
func memLimitSetting() string {
	if l := debug.SetMemoryLimit(-1); l < math.MaxInt64 {
		return strconv.FormatInt(l>>20, 10) + "MiB"
	}
	return "none"
}

// setProcs gives the relay's UDP event loops a P each beyond the CPUs (Linux): a loop waits
// for packets in a blocking system call, and with a P to spare the scheduler need not take
// the loop's P back and hand it over again for every packet (README, Performance). The CPUs
// still bound what runs: GOMAXPROCS only counts places for goroutines.
func setProcs(loops int) {
	if runtime.GOOS == "linux" && loops > 0 {
		runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + loops)
	}
}
