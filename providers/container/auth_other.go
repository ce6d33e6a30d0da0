//go:build !unix

package container

import "os/exec"

// killGroup keeps exec.CommandContext's kill of the process itself where
// there are no process groups.
func killGroup(*exec.Cmd) {}
