time ip -V
time ip -V
time ip netns add a
time ip -n a link set lo up
time tc -V
time iperf3 -v >/dev/null
time iperf3 -v >/dev/null
