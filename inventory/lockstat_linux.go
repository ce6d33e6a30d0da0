package inventory

import "syscall"

// statTimes returns a file's modification and change times in ns.
func statTimes(st *syscall.Stat_t) (mtime, ctime int64) {
	return st.Mtim.Nano(), st.Ctim.Nano()
}
