"""All service settings in one place, read from `OEGATE_*` environment variables (pydantic-settings).

`Settings()` is built once, by `python -m service` (or a test), and passed to `create_app`; nothing reads the
environment anywhere else.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Pillow refuses images above twice its MAX_IMAGE_PIXELS (89,478,485) before our own check could run, and warns
# above it; our limit stays below so that our clearer 422 message is the one clients see.
PILLOW_BOMB_PIXELS = 89_478_485


class Settings(BaseSettings):
    """The service's configuration. Every field can be set as `OEGATE_<FIELD>` (lists as JSON, e.g. `["a","b"]`)."""

    model_config = SettingsConfigDict(env_prefix="OEGATE_", use_attribute_docstrings=True, extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    """Interface `python -m service` binds to (use 0.0.0.0 in a container)."""
    port: int = Field(default=8000, ge=1, le=65535)
    """TCP port `python -m service` listens on."""
    workers: int = Field(default=1, ge=1, le=64)
    """Server processes sharing the port (service/workers.py). 1 serves from the process itself, as always; N > 1
    starts a supervisor and N worker processes, each listening with SO_REUSEPORT (the kernel spreads connections
    over them) once its models are loaded, each with its own models and micro-batchers, onnxruntime threads sized
    to usable CPUs / N, Prometheus metrics summed across workers and hot swap by polling (`poll_interval_s` must be
    > 0). Limits (`max_requests_in_flight`, `max_queue_size`, `limit_concurrency`) and readiness are per worker; a
    pin through the admin API reaches the other workers at their next poll. Capture needs one worker."""
    model_dir: Path = Path("models")
    """Directory holding `<name>/<version>/{model.onnx,card.json}` artifacts."""
    providers: list[str] = Field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"], min_length=1
    )
    """onnxruntime execution providers in order of preference; the one actually used is reported."""
    intra_op_threads: int = Field(default=0, ge=0)
    """onnxruntime threads inside one operator (0 = one per CPU this process may use: its affinity and its
    cgroup's CPU quota, not the host's core count; logged at start-up)."""
    inter_op_threads: int = Field(default=0, ge=0)
    """onnxruntime threads across independent operators (0 = 1: the gate graph runs its operators in order)."""
    cpu_mem_arena: bool = True
    """Whether onnxruntime keeps a CPU memory arena per session (grown to the largest run's peak and never given
    back) instead of allocating and freeing each run's tensors. Off, RSS falls back after a burst (224 instead of
    298 MB after 64 long texts at max_batch_size 16) but the peak under bench.attack was no lower (300-348 MB
    against 304-342 MB with it), so it stays on."""
    max_batch_size: int = Field(default=16, ge=1, le=4096)
    """Most instances the micro-batcher puts into one session run. It sets the service's memory peak: onnxruntime's
    arena keeps the largest run's activations, and a text run of 64 x 128 tokens grew RSS by ~200 MB per run shape
    (peak 602-691 MB under bench.attack at 64; 304-342 MB at 16, README Guarantees). Single-image traffic rarely
    fills 16 (mean batch 11.6 at 32 connections, README Speed); larger requests are split into runs of 16."""
    max_delay_ms: float = Field(default=0.0, ge=0.0, le=1000.0)
    """Longest time the first queued instance waits for others to join its batch. 0 (the default, as Triton's
    `max_queue_delay_microseconds`) batches greedily: a run takes every instance queued when it starts, so batches
    grow with load (requests queue while the previous run executes) and a lone request never waits. A delay can
    help an accelerator whose per-run cost dominates; on CPU, 2 ms measured no faster at 32 connections and
    slower at 1 and 8 (README.md, Speed)."""
    max_queue_size: int = Field(default=4096, ge=1)
    """Most instances waiting per model (each lane's queue); beyond it requests get 503 with Retry-After. The
    default, 64 x 64, holds every instance of the heavy requests admission lets in at once (64, with up to
    `max_instances` each): an admitted heavy request then never meets a full queue, so overload is refused at
    admission, before a body is read, not seconds later after reading and decoding it (bench.attack measured such
    late 503s at up to 3 s with 1,024). A smaller value bounds queued memory harder and brings those back (logged
    at start-up)."""
    retry_after_s: int = Field(default=1, ge=1)
    """Seconds sent in the Retry-After header of an overload (503) response."""
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Largest request body accepted (413 beyond it), checked before and while the body is read."""
    max_instances: int = Field(default=64, ge=1)
    """Most instances (images, arrays, texts) in one request (422 beyond it)."""
    max_image_pixels: int = Field(default=4096 * 4096, ge=1, le=PILLOW_BOMB_PIXELS)
    """Largest width x height of an uploaded image, checked from its header before decoding (bomb guard)."""
    image_pixels_factor: float = Field(default=16.0, ge=1.0)
    """An image model takes images of at most `max(image_pixels_factor x its input pixels, image_pixels_floor)`
    pixels (and never more than `max_image_pixels`), checked from the header before decoding (422 beyond it):
    decoding and downscaling cost grows with the uploaded size, not the model's."""
    image_pixels_floor: int = Field(default=1024 * 1024, ge=1)
    """Smallest per-image pixel budget, whatever the model's input size (a 28x28 model still takes a 1024x1024
    photo)."""
    max_request_pixels: int = Field(default=16 * 1024 * 1024, ge=1)
    """Most pixels (width x height, summed over every image) one request may ask the service to decode; the image
    that would pass it is refused (422) from its header, before its pixels are decoded."""
    decode_concurrency: int = Field(default=0, ge=0)
    """Requests decoding or tokenizing at once, in worker threads of their own limiter (0 = one per usable CPU)."""
    inference_concurrency: int = Field(default=0, ge=0)
    """onnxruntime session runs at once over all models and versions (0 = one per usable CPU); separate from
    decoding, so a flood of uploads cannot starve the runs (and neither uses anyio's default thread pool)."""
    max_requests_in_flight: int = Field(default=256, ge=1)
    """Predict/infer requests admitted at once (being read, decoded, queued or run); beyond it requests get 503
    with Retry-After before their body is read, and `/v2/health/ready` says not ready while the bound is reached.
    Memory is bounded by `max_request_bytes_in_flight` and the batch size, not by this count: 256 lets 128 client
    connections each keep a small request in flight (64 refused half of them in bench runs)."""
    max_request_bytes_in_flight: int = Field(default=32 * 1024 * 1024, ge=1024)
    """Most bytes of request body (the cost of each admitted predict/infer request: its `Content-Length`, or
    `max_body_bytes` for a body of unknown or compressed size) in flight at once; beyond it requests get 503 with
    Retry-After before their body is read (service/admission.py). It bounds the bodies, parsed instances and
    decoded texts held at once, which the request count alone does not (64 requests may be 8 MB each)."""
    light_request_bytes: int = Field(default=16 * 1024, ge=0)
    """Largest body (in bytes) of a *light* request (a digit is ~0.5 KB of JSON): light requests may use the
    reserve below, decode in threads of their own and run ahead of heavy ones in their model's batch queue."""
    light_reserved_share: float = Field(default=0.75, ge=0.0, lt=1.0)
    """Share of `max_requests_in_flight` (rounded down; 192 of 256), each with `light_request_bytes` of the byte
    bound, that heavy requests may not use, so that light ones are still admitted while heavy ones saturate the
    server: heavy requests hold at most 64 slots (as many as the whole bound before the lanes existed: more admitted
    heavy work slowed even the 503s under bench.attack), light ones all 256 (128 connections of one-digit requests)."""
    limit_concurrency: int = Field(default=512, ge=2)
    """uvicorn's backstop: most connections (or tasks) at once, beyond which it answers a plain 503; must be above
    `max_requests_in_flight` so that probes and metrics keep working while predictions are refused."""
    body_timeout_s: float = Field(default=30.0, gt=0.0)
    """Longest time from a request's start to the end of its body; a slower client gets 408 and the connection
    is closed (uvicorn itself has no body-read deadline)."""
    header_timeout_s: float = Field(default=10.0, gt=0.0)
    """Longest time from a connection's start (or the end of its previous response) to the end of a request's
    headers; the connection is closed without a response after it (uvicorn's h11 protocol has no such deadline)."""
    timeout_keep_alive_s: int = Field(default=5, ge=1)
    """Seconds an idle keep-alive connection stays open (uvicorn's `timeout_keep_alive`)."""
    timeout_graceful_shutdown_s: int = Field(default=20, ge=1)
    """Seconds uvicorn waits for in-flight requests after SIGTERM before cancelling them. Keep it below the
    Kubernetes `terminationGracePeriodSeconds` (30) minus the preStop sleep (5) in deploy/k8s/deployment.yaml,
    so the pod exits by itself before the kubelet's SIGKILL."""
    large_json_bytes: int = Field(default=64 * 1024, ge=0)
    """JSON bodies larger than this are parsed in a worker thread (the decode limiter), not on the event loop,
    so health probes stay fast while big requests are parsed."""
    pin: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)
    """Versions to serve instead of the newest, as `name=version` pairs: `OEGATE_PIN=mnist-oe=2,reviews=1`. A
    pinned model serves exactly that version (not ready while it cannot be loaded); the admin API changes pins at
    run time (`PUT`/`DELETE /v1/admin/models/{name}/pin`)."""
    max_text_chars: int = Field(default=4096, ge=1)
    """Longest text instance, in characters (422 beyond it). Tokens beyond a text model's `max_length` are
    truncated, not refused; this limit bounds the tokenizing work per text."""
    allow_threshold_override: bool = False
    """Whether a request may set its own `threshold` (otherwise such requests get 403)."""
    admin_token: SecretStr | None = None
    """Bearer token for `/v1/admin/*`; the admin API is off (404) while unset."""
    inference_token: SecretStr | None = None
    """Bearer token required for inference and model metadata; open while unset. Health and metrics stay open."""
    poll_interval_s: float = Field(default=10.0, ge=0.0)
    """How often the model directory is rescanned for new versions; 0 disables polling."""
    required_models: list[str] | None = None
    """Models that must be loaded for `/v2/health/ready`; unset means every model found at start."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Level of the JSON logs written to stderr."""

    capture_dir: Path | None = None
    """Directory of the capture store (rejected and sampled inputs, with an index, `index.sqlite`); capture is off
    while unset, and then nothing is stored and no directory is created. Must lie outside `model_dir`. A store has
    one writer: give each replica its own (`/captures/$(POD_NAME)` on Kubernetes, deploy/k8s/capture); training
    reads a directory of stores as one."""
    capture_models: Annotated[list[str] | None, NoDecode] = None
    """Models whose inputs are captured, as `a,b` or a JSON list; unset means every model (when capture is on)."""
    capture_rejected_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    """Share of rejected instances (anomaly_score >= threshold) captured."""
    capture_band: float = Field(default=0.05, ge=0.0, le=1.0)
    """Width of the uncertain band, in anomaly-score units just below the threshold: an accepted instance with
    `threshold - capture_band <= anomaly_score < threshold` is a band instance."""
    capture_band_rate: float = Field(default=0.1, ge=0.0, le=1.0)
    """Share of band instances (accepted, near the threshold) captured."""
    capture_control_rate: float = Field(default=0.01, ge=0.0, le=1.0)
    """Share of plainly accepted instances (below the band) captured, as controls."""
    capture_max_bytes: int = Field(default=1024**3, ge=1)
    """Most bytes of captured input files kept; beyond it the oldest captures are deleted (the index not counted)."""
    capture_max_age_s: float = Field(default=7 * 24 * 3600.0, gt=0.0)
    """Longest time a capture is kept (7 days by default); older ones are deleted by the writer."""
    capture_source_header: str = Field(default="X-OEGate-Source", pattern=r"^[A-Za-z0-9-]{1,64}$")
    """Request header whose value is stored as each capture's `source` (1-64 of `[A-Za-z0-9._:@-]`, else empty),
    so curation can cap what one client contributes. A client's own claim: set it at a trusted proxy if it
    matters."""
    capture_queue_size: int = Field(default=256, ge=1)
    """Most captured instances waiting for (or being written by) the background writer; beyond it samples are
    dropped and counted."""
    capture_queue_bytes: int = Field(default=64 * 1024**2, ge=1)
    """Most bytes of captured inputs waiting for the writer (the memory capture may hold); beyond it samples are
    dropped and counted."""

    @field_validator("capture_models", mode="before")
    @classmethod
    def _parse_capture_models(cls, value: Any) -> Any:
        """`a,b` or a JSON list from the environment; a list as it is. Names must not be empty."""
        if isinstance(value, str):
            value = json.loads(value) if value.lstrip().startswith("[") else value.split(",")
        if isinstance(value, list):
            names = [name.strip() if isinstance(name, str) else name for name in value]
            if not names or any(name == "" for name in names):
                raise ValueError("capture_models must name at least one model, and no name may be empty")
            return names
        return value

    @field_validator("pin", mode="before")
    @classmethod
    def _parse_pins(cls, value: Any) -> Any:
        """`name=version[,name=version...]` from the environment; a dict as it is."""
        if not isinstance(value, str):
            return value
        pins: dict[str, str] = {}
        for pair in filter(None, (part.strip() for part in value.split(","))):
            name, sep, version = pair.partition("=")
            if not sep or not name.strip() or not version.strip().isdigit() or int(version) < 1:
                raise ValueError(f"pin {pair!r} must be name=version with a positive integer version")
            pins[name.strip()] = version.strip()
        return pins

    @property
    def queue_holds_admitted_requests(self) -> bool:
        """Whether `max_queue_size` holds every instance of the heavy requests admission admits at once (then no
        admitted heavy request is refused by a full queue)."""
        heavy = self.max_requests_in_flight - self.light_reserved_requests
        return self.max_queue_size >= heavy * self.max_instances

    @property
    def light_reserved_requests(self) -> int:
        """Requests in flight kept for light ones (`light_reserved_share` of `max_requests_in_flight`)."""
        return int(self.max_requests_in_flight * self.light_reserved_share)

    @property
    def light_reserved_bytes(self) -> int:
        """Bytes of the in-flight bound kept for light requests."""
        return self.light_reserved_requests * self.light_request_bytes

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.max_queue_size < self.max_instances:
            raise ValueError(
                f"max_queue_size ({self.max_queue_size}) must be >= max_instances ({self.max_instances}), "
                "or a full-size request could never be queued"
            )
        if self.max_request_bytes_in_flight < self.max_body_bytes + self.light_reserved_bytes:
            raise ValueError(
                f"max_request_bytes_in_flight ({self.max_request_bytes_in_flight}) must be >= max_body_bytes "
                f"({self.max_body_bytes}) + the light reserve ({self.light_reserved_bytes}), or a request of "
                "max_body_bytes could never be admitted"
            )
        if self.limit_concurrency <= self.max_requests_in_flight:
            raise ValueError(
                f"limit_concurrency ({self.limit_concurrency}) must be > max_requests_in_flight "
                f"({self.max_requests_in_flight}), or probes would be refused before predictions are"
            )
        if self.workers > 1:
            self._check_workers()
        if self.capture_dir is not None:
            capture, models = self.capture_dir.resolve(), self.model_dir.resolve()
            if capture == models or capture.is_relative_to(models) or models.is_relative_to(capture):
                raise ValueError(
                    f"capture_dir ({self.capture_dir}) must lie outside model_dir ({self.model_dir}) and not contain "
                    "it, or captures would be scanned as models"
                )
        for name, token in (("admin_token", self.admin_token), ("inference_token", self.inference_token)):
            if token is not None and len(token.get_secret_value()) < 16:
                raise ValueError(f"{name} must be at least 16 characters")
        return self

    def _check_workers(self) -> None:
        """Several workers each poll the model directory for themselves: without polling, a new version would reach
        only the worker an admin reload happened to hit. Capture's store and index have one writer per process."""
        if self.poll_interval_s <= 0:
            raise ValueError("workers > 1 needs poll_interval_s > 0: each worker picks up new versions by polling")
        if self.capture_dir is not None:
            raise ValueError("capture_dir needs workers = 1 (the capture store has one writer process)")
        if not hasattr(socket, "SO_REUSEPORT"):
            raise ValueError("workers > 1 needs SO_REUSEPORT, which this platform's sockets lack")
