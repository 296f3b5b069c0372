"""Model organisms: small Llama models trained here from scratch on the paper's tasks, so that the language-model
chapters run on a CPU with the same Hugging Face classes (and the same capture code) as Llama-3.1-8B.

Shared base (task-agnostic):
  vocab.py    build_word_tokenizer(words) -> PreTrainedTokenizerFast (word level; <pad>=0 <bos>=1 <eos>=2 <unk>=3;
              <bos> prepended; offsets work), vocabulary_from_texts(texts) -> [word, ...]. Token positions of
              words: qkcore.lm.positions (the one convention: TokenSpan(start, stop), stop exclusive).
  llama.py    OrganismConfig(n_layers, hidden, n_heads, n_kv_heads, intermediate, max_positions, rope_theta,
              tie_embeddings, init_std) (frozen); build_model(config, tokenizer, seed) -> LlamaForCausalLM (eager);
              save_organism(dir, model, tokenizer, info, dtype=float16); load_organism(dir) -> (model, tok, info)
              via AutoModelForCausalLM/AutoTokenizer.from_pretrained; quiet_progress() hides HF progress bars.
  trainer.py  TrainConfig(steps, lr, warmup_steps, min_lr_ratio, weight_decay, betas, grad_clip, seed, eval_every,
              log_every) (frozen); train(model, batch_fn, cfg, eval_fn=None, log=None) -> TrainHistory, where
              batch_fn(step, generator) -> (input_ids (B,T), labels (B,T), [attention_mask]); labels use HF's
              convention (aligned with input_ids, -100 = no loss); eval_fn(model, step) -> {name: float}.

Tasks: filter_task.py (filter heads, Figures 6–7) and filter_organism.py (its two organisms, filter-5x5 and
filter-13: SPECS, train_filter_organism), binding_task.py and binding_organism.py (the binding organism). Trained
weights live in weights/<name>/ (llama.organism_dir(name)); weights/README.md gives the commands that regenerate them;
every organism loads through llama.load_organism.

    tok = build_word_tokenizer(words); model = build_model(OrganismConfig(), tok, seed=0)
    history = train(model, batch_fn, TrainConfig(steps=1500, seed=0))
    save_organism("qkcore/organisms/weights/my-task", model, tok, info={"train": TrainConfig().to_dict()})
"""
