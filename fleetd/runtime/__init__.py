"""asyncio plumbing shared by the daemons: the reconcile loop, backoff and supervision."""
