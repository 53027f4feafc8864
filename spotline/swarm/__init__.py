"""The staging swarm: suite (what to fire), fire (adaptive HTTP fan-out), grading (checks, judge),
gate (the decision, the judge's calibration arithmetic), judge (the gateway's judge route),
progress and shard (a resumable shard). Plain Python; flows/swarm.py tells the story."""
