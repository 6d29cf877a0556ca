# cellular: trace-driven downlink (mahimahi format, ~4-20 Mbit/s, mean ~12 over a 20 s period), 40 ms RTT, 0.5% loss;
# a steady 5 Mbit/s uplink.
description=LTE-like trace-driven link
delay=20ms
loss=0.5%
a2b.trace=../traces/cellular.trace
b2a.rate=5mbit
queue=1bdp
