"""gunicorn settings for a Glassbox serving process:

    gunicorn -c glassbox/gunicorn.conf.py glassbox.wsgi

gthread workers: each worker process answers many connections at once with
threads, and keeps them alive (model clients send request after request).
Threads are what lets cross-request batching work (rollouts/request_batching.py):
concurrent calls inside one process share a forward pass, so on a small
machine fewer processes with more threads serve more than many processes
each holding its own copy of the model. Every value comes from the
environment; the defaults suit a few cores.
"""

import os

bind = os.environ.get("GLASSBOX_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GLASSBOX_WEB_WORKERS", "1"))
worker_class = "gthread"
threads = int(os.environ.get("GLASSBOX_WEB_THREADS", "32"))
keepalive = int(os.environ.get("GLASSBOX_WEB_KEEPALIVE", "30"))
# Uploads of 400 MB models and first loads of a version take a while.
timeout = int(os.environ.get("GLASSBOX_WEB_TIMEOUT", "300"))
loglevel = os.environ.get("GLASSBOX_LOG_LEVEL", "info").lower()
