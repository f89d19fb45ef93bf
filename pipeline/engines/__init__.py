"""Model engines: plain classes behind small protocols, no Ray and no HTTP.

- song models (`pipeline.song_models.SongModel`): `sketch.SketchSongModel`,
  `ace_step.AceStepSongModel`, `replicate.ReplicateSongModel`;
- the watermark model: `audioseal.AudioSealWatermarker`;
- the stem separator: `demucs.DemucsSeparator`;
- lyrics LLMs (`chat.ChatEngine`): `chat_openai`, `chat_mlx`, `chat_vllm`;
- tag engines (`tags.TagEngine`): lexical and semantic.

Each imports its heavy library (torch, diffusers, mlx, vllm, sentence-transformers) only when it
is built, so importing this package costs nothing.
"""
