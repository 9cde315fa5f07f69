// Package netns runs programs in named network namespaces, the ones
// `ip netns add` makes, and keeps programs running there until asked to
// stop. The lab (examples/testbed) builds its network with it, and the
// tests' helpers (internal/testutil) wrap it for testing.TB, so that both
// make, enter and clean up a namespace the same way.
//
// It shells out to iproute2's ip, as a person at the terminal would: the
// commands it runs can be copied from an error message and rerun by hand.
package netns
