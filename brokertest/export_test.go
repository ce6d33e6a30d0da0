package brokertest

// KeepFlag is -brokertest.keep, for tests that set it.
var KeepFlag = &keepFlag
