package hostkit

import "time"

// PIDLine starts every command Execute sends over SSH.
const PIDLine = pidLine

// SFTPRequestSize lets the external tests ask a real sshd.
var SFTPRequestSize = sftpRequestSize

// SetStuckAfter sets how long h's calls given up on may wait for a stuck
// peer before h closes the connection. Call it before using h.
func SetStuckAfter(h *Host, d time.Duration) { h.stuckAfter = d }
