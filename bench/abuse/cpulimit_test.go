package abuse_test

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// cpuLimit is a cgroup holding one process to a share of one CPU, so that
// a load generator on the same machine can offer it many times what it
// can serve: on 2 cores shared with the generator, a node with both cores
// serves about as fast as the generator can send (bench/RESULTS.md).
// It needs root and a writable cgroup tree: v1's cpu controller at
// /sys/fs/cgroup/cpu (the machine the figures in bench/RESULTS.md come
// from), or v2's cpu.max (not tried there: a v2 tree whose root holds
// the benchmark's own processes in a container may refuse the controller,
// and the benchmark then says so).
type cpuLimit struct {
	dir   string
	v2    bool
	share float64
}

// cgroupRoot is where the cgroup file system is mounted.
const cgroupRoot = "/sys/fs/cgroup"

// newCPULimit makes a cgroup whose members get share of one CPU
// together.
func newCPULimit(name string, share float64) (*cpuLimit, error) {
	l := &cpuLimit{share: share}
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		// v2: the cpu controller must be on for the root's children.
		if err := os.WriteFile(filepath.Join(cgroupRoot, "cgroup.subtree_control"), []byte("+cpu"), 0); err != nil {
			return nil, fmt.Errorf("enable the cpu controller: %w", err)
		}
		l.dir, l.v2 = filepath.Join(cgroupRoot, name), true
	} else {
		l.dir = filepath.Join(cgroupRoot, "cpu", name)
	}
	if err := os.Mkdir(l.dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("make cgroup %s (root and a writable cgroup tree needed; -node-cpu 0 runs without a limit): %w", l.dir, err)
	}
	if err := l.apply(); err != nil {
		l.remove()
		return nil, err
	}
	return l, nil
}

// period is the CFS period: short, so that the process runs in many
// short slices rather than one burst then a long throttle per 100 ms; at
// least 1 ms of quota in it, the kernel's least.
func (l *cpuLimit) period() time.Duration {
	return max(10*time.Millisecond, time.Duration(float64(time.Millisecond)/l.share))
}

// apply sets the quota.
func (l *cpuLimit) apply() error {
	p := l.period()
	q := max(time.Millisecond, time.Duration(math.Round(float64(p)*l.share/float64(time.Microsecond)))*time.Microsecond)
	if l.v2 {
		return l.write("cpu.max", fmt.Sprintf("%d %d", q.Microseconds(), p.Microseconds()))
	}
	// The period first: a quota is checked against the period in force.
	if err := l.write("cpu.cfs_period_us", strconv.FormatInt(p.Microseconds(), 10)); err != nil {
		return err
	}
	return l.write("cpu.cfs_quota_us", strconv.FormatInt(q.Microseconds(), 10))
}

// lift removes the quota; the process stays in the group.
func (l *cpuLimit) lift() error {
	if l.v2 {
		return l.write("cpu.max", "max")
	}
	return l.write("cpu.cfs_quota_us", "-1")
}

// add moves the process pid, all its threads, into the group.
func (l *cpuLimit) add(pid int) error { return l.write("cgroup.procs", strconv.Itoa(pid)) }

// remove deletes the group, which the kernel allows once no process is
// in it: call it after the process ended.
func (l *cpuLimit) remove() error { return os.Remove(l.dir) }

func (l *cpuLimit) write(file, v string) error {
	if err := os.WriteFile(filepath.Join(l.dir, file), []byte(v), 0); err != nil {
		return fmt.Errorf("cgroup %s: write %q to %s: %w", l.dir, v, file, err)
	}
	return nil
}
