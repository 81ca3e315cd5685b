"""Fine-tuning: datasets from documents, chat examples and feedback; LoRA/full training; the model registry.

Nothing heavy is imported here (``chatbot.settings`` imports ``finetune.config``). The public surface:

- ``finetune.data``: ``collect(...) -> Collected``, ``build_trainset(items, tokenizer, cfg) -> TrainSet``
- ``finetune.train``: ``train(settings, trainset, resume=..., init=...) -> RunResult``
- ``finetune.retrain``: ``retrain(settings) -> RetrainReport`` (gated, locked, idempotent)
- ``finetune.perplexity``: ``evaluate(model, examples, pad_id) -> {"loss", "perplexity", "tokens"}`` (the
  held-out loss the gate compares; the chat-level evaluation is ``chatbot.evaluation``)
- ``finetune.models``: ``load_generator(settings)``, ``load_version(settings, version)``, ``load_tokenizer``,
  ``base_source``, ``version_key`` (the one place models are found and loaded)
- ``finetune.registry``: ``Registry(settings).current() -> Version | None``, promote, rollback, ship
- ``finetune.export``: ``export(settings, version, out_dir, int8=..., hub_repo=...)``
- ``finetune.search``: ``search(settings, trainset, n_trials) -> SearchResult``
"""
