# satellite: a GEO link: RTT 600 ms, 50 Mbit/s down (a2b) and 10 Mbit/s up (b2a), 5 ms jitter, 0.5% loss.
description=GEO satellite: RTT 600 ms, 50/10 Mbit/s, 5 ms jitter, 0.5% loss
delay=300ms
jitter=5ms
loss=0.5%
a2b.rate=50mbit
b2a.rate=10mbit
queue=1bdp
