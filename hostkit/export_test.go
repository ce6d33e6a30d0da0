package hostkit

// SFTPRequestSize lets the external tests ask a real sshd.
var SFTPRequestSize = sftpRequestSize
