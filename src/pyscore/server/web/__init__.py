"""The HTTP edge shared by every API: dependencies, error answers, admission control, host
and proxy checks, the local store's signed URLs, worker lifetime; and the operator's view of
it: the request log (with the audit trail's request context), metrics, health."""
