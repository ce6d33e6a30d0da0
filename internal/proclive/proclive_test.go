package proclive

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestSelfAlive(t *testing.T) {
	me := Self()
	if me.Started == 0 || me.PID != os.Getpid() {
		t.Fatalf("Self() = %+v: no start time or not this pid", me)
	}
	if me.Dead() || !me.Local() {
		t.Fatalf("this process: Dead %v, Local %v", me.Dead(), me.Local())
	}
	reused := me
	reused.Started++ // the pid now belongs to another process
	if !reused.Dead() {
		t.Error("a pid with another start time is not dead")
	}
	rebooted := me
	rebooted.BootID = "another-boot"
	if !rebooted.Dead() || rebooted.Local() {
		t.Error("a process of another boot is not dead, or is local")
	}
	elsewhere := me
	elsewhere.Machine = "some-other-machine"
	elsewhere.Started++
	if elsewhere.Dead() || elsewhere.Local() {
		t.Error("a process of another machine is judged dead, or local")
	}
	if (Process{}).Dead() {
		t.Error("the zero Process is judged dead")
	}
}

func TestExitedIsDead(t *testing.T) {
	cmd := exec.Command("/bin/true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := Self()
	p.PID = cmd.Process.Pid
	p.Started, _ = Start(p.PID)
	// Before Wait it is a zombie (or still running); after Wait its pid is
	// gone, unless reused at once, which the start time tells.
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for !p.Dead() {
		if time.Now().After(deadline) {
			t.Fatalf("exited process %d not judged dead", p.PID)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStartErrors(t *testing.T) {
	if _, err := Start(-1); err == nil {
		t.Error("Start(-1) gave no error")
	}
}
