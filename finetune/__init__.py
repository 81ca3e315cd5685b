"""Fine-tuning: datasets from documents, chat examples and feedback; LoRA/full training; the model registry.

Nothing heavy is imported here (``chatbot.settings`` imports ``finetune.config``). The public surface:

- ``finetune.data``: ``collect(...) -> Collected``, ``build_trainset(items, tokenizer, cfg) -> TrainSet``
- ``finetune.train``: ``train(settings, trainset, resume=..., init=...) -> RunResult``
- ``finetune.retrain``: ``retrain(settings) -> RetrainReport`` (gated, locked, idempotent)
- ``finetune.evaluate``: ``evaluate(model, examples, pad_id) -> {"loss", "perplexity", "tokens"}``
- ``finetune.registry``: ``Registry(settings).current() -> Version | None``, ``load_version_for_inference``,
  ``CurrentModel(settings).get()`` (reloads when the current version changes)
- ``finetune.export``: ``export(settings, version, out_dir, int8=..., hub_repo=...)``
- ``finetune.search``: ``search(settings, trainset, n_trials) -> SearchResult``
"""
