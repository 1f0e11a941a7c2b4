"""fleet's v1 HTTP API, wire-compatible with CoreOS fleet, served by fleetd's `api` component.

Modules, from the edge inwards:

* `serve`: the component: an `ApiView`, and uvicorn on each `--listen` address (a 0660 unix
  socket; TCP only with a bearer token);
* `app`: `create_app(service, token=..., max_body_bytes=...)`, the FastAPI app: thin routes under
  `/fleet/v1` and `/v1-alpha`, the Server header, the token and the body limit;
* `errors`: every refusal and the one table from errors to statuses and fleet's envelope;
* `pagination`: fleet's page tokens;
* `schemas`: the wire format, out (fleet's field order, empty fields left out) and in (Go's
  decoding), and the models of the OpenAPI document;
* `service`: `ApiService`, one method per operation: reads from the view, guarded writes to etcd;
* `view`: `ApiView`, the watch-fed maps every read is answered from;
* `discovery`: the Google discovery document at `/fleet/v1/discovery`.

See `docs/api.md` for what is served and how it differs from fleet.
"""
