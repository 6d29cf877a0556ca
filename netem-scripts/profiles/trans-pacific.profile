# trans-pacific: 100 Mbit/s, RTT 150 ms, 2 ms jitter, 0.1% loss each way.
description=100 Mbit/s, RTT 150 ms, 2 ms jitter, 0.1% loss
rate=100mbit
delay=75ms
jitter=2ms
loss=0.1%
queue=1bdp
