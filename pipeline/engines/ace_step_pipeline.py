"""`BucketedAceStepPipeline`: diffusers' AceStepPipeline with each row padded to its own bucket
and formatted with its own metadata, and edits' VAE samples drawn from the request's seed (see
pipeline/engines/ace_step.py for why)."""

from __future__ import annotations

import functools
import math
from typing import Any


def padded_length(tokens: int, multiple: int) -> int:
    return -(-tokens // multiple) * multiple


@functools.cache
def bucketed_pipeline_class() -> Any:
    """`BucketedAceStepPipeline`: diffusers' AceStepPipeline whose prompt encoding takes metadata
    per row and pads every row to its own bucket (see the module docstring). Built on first use so
    importing this module does not import diffusers."""
    from diffusers.pipelines.ace_step.pipeline_ace_step import AceStepPipeline

    class BucketedAceStepPipeline(AceStepPipeline):
        """AceStepPipeline with two changes to `encode_prompt`, and nothing else:

        - `bpm` and `keyscale` may be lists, one value per row (the base class takes one value
          for the whole call);
        - text and lyric tokens are padded to a multiple of `text_pad_multiple` and
          `lyrics_pad_multiple` (the base class pads to the longest row). Calls whose rows share
          their buckets then pad each row exactly as it would be padded alone.

        With multiples of 1 and scalar metadata it returns exactly what the base class returns
        (a test pins this).
        """

        text_pad_multiple = 1
        lyrics_pad_multiple = 1
        encode_generator: Any = None
        """A CPU `torch.Generator` the VAE posterior samples of source and reference audio are
        drawn from (the base class draws them from the global RNG, so an edit would come out
        differently on every run); None: the base class's behaviour."""
        tokenizer: Any  # components, registered by DiffusionPipeline at load time
        text_encoder: Any
        vae: Any
        condition_encoder: Any
        audio_tokenizer: Any
        audio_token_detokenizer: Any
        sample_rate: int

        def _encode_audio(self, audio: Any, dtype: Any) -> Any:
            """Audio `[B, 2, n]` → latents `[B, frames, channels]`, sampled from
            `encode_generator`."""
            posterior = self.vae.encode(audio.to(dtype=self.vae.dtype)).latent_dist
            latents = posterior.sample(generator=self.encode_generator)
            return latents.transpose(1, 2).to(dtype=dtype)

        def prepare_reference_audio_latents(
            self, reference_audio: Any, batch_size: int, device: Any, dtype: Any
        ) -> tuple[Any, Any]:
            if self.encode_generator is None:
                return super().prepare_reference_audio_latents(
                    reference_audio, batch_size, device, dtype
                )
            import torch

            # The body of AceStepPipeline.prepare_reference_audio_latents (diffusers 0.42):
            # 10 s from the front, the middle and the back of the reference (repeated to 30 s).
            target_samples = 30 * self.sample_rate
            if reference_audio.shape[-1] < target_samples:
                repeats = math.ceil(target_samples / reference_audio.shape[-1])
                reference_audio = reference_audio.repeat(1, repeats)
            segment = 10 * self.sample_rate
            total = reference_audio.shape[-1]
            middle = total // 3
            back = max(total - segment, 0)
            reference_audio = torch.cat(
                [
                    reference_audio[:, :segment],
                    reference_audio[:, middle : middle + segment],
                    reference_audio[:, back : back + segment],
                ],
                dim=-1,
            )
            latents = self._encode_audio(reference_audio.unsqueeze(0).to(device=device), dtype)
            order = torch.arange(batch_size, device=device, dtype=torch.long)
            return latents.expand(batch_size, -1, -1), order

        def prepare_src_latents(  # type: ignore[override]
            self,
            device: Any,
            dtype: Any,
            batch_size: int = 1,
            src_audio: Any = None,
            audio_codes: Any = None,
            latent_length: int | None = None,
            task_type: str = "text2music",
        ) -> tuple[Any, int]:
            if self.encode_generator is None or src_audio is None or audio_codes is not None:
                return super().prepare_src_latents(
                    device, dtype, batch_size, src_audio, audio_codes, latent_length, task_type
                )
            # The source-audio branch of AceStepPipeline.prepare_src_latents (diffusers 0.42).
            if src_audio.dim() == 2:
                src_audio = src_audio.unsqueeze(0)
            src_latents = self._encode_audio(src_audio.to(device=device), dtype)
            if src_latents.shape[0] == 1:
                src_latents = src_latents.expand(batch_size, -1, -1)
            frames = src_latents.shape[1]
            if task_type == "cover":
                if self.audio_tokenizer is None or self.audio_token_detokenizer is None:
                    raise ValueError(
                        "a cover needs the checkpoint's audio_tokenizer and audio_token_detokenizer"
                    )
                silence = self.condition_encoder.silence_latent.to(device=device, dtype=dtype)
                quantized, _ = self.audio_tokenizer.tokenize(src_latents, silence)
                src_latents = self.audio_token_detokenizer(quantized.to(device=device, dtype=dtype))
                src_latents = src_latents[:, :frames, :].contiguous()
            return src_latents, frames

        def format_rows(
            self,
            prompt: list[str],
            lyrics: list[str],
            vocal_language: list[str],
            audio_duration: float,
            instruction: str | None,
            bpm: int | list[int] | None,
            keyscale: str | list[str] | None,
            timesignature: str | None,
        ) -> tuple[list[str], list[str]]:
            """The text-encoder input and the lyric input of every row."""
            rows = len(prompt)
            bpms = bpm if isinstance(bpm, list) else [bpm] * rows
            keys = keyscale if isinstance(keyscale, list) else [keyscale] * rows
            formatted = [
                self._format_prompt(
                    prompt=prompt[i],
                    lyrics=lyrics[i],
                    vocal_language=vocal_language[i],
                    audio_duration=audio_duration,
                    instruction=instruction,
                    bpm=bpms[i],
                    keyscale=keys[i],
                    timesignature=timesignature,
                )
                for i in range(rows)
            ]
            return [text for text, _ in formatted], [lyric for _, lyric in formatted]

        def padded_lengths(
            self, text: str, lyric: str, max_text_length: int = 256, max_lyric_length: int = 2048
        ) -> tuple[int, int]:
            """The bucket of one row: its text and lyric token counts once padded."""
            text_tokens = len(
                self.tokenizer(text, truncation=True, max_length=max_text_length).input_ids
            )
            lyric_tokens = len(
                self.tokenizer(lyric, truncation=True, max_length=max_lyric_length).input_ids
            )
            return (
                padded_length(text_tokens, self.text_pad_multiple),
                padded_length(lyric_tokens, self.lyrics_pad_multiple),
            )

        def encode_prompt(  # type: ignore[override]
            self,
            prompt: str | list[str],
            lyrics: str | list[str],
            device: Any,
            vocal_language: str | list[str] = "en",
            audio_duration: float = 60.0,
            instruction: str | None = None,
            bpm: int | list[int] | None = None,
            keyscale: str | list[str] | None = None,
            timesignature: str | None = None,
            max_text_length: int = 256,
            max_lyric_length: int = 2048,
        ) -> tuple[Any, Any, Any, Any]:
            # The body of AceStepPipeline.encode_prompt (diffusers 0.42), with per-row metadata
            # and `pad_to_multiple_of`.
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            lyric_list = [lyrics] if isinstance(lyrics, str) else list(lyrics)
            languages = (
                [vocal_language] * len(prompts)
                if isinstance(vocal_language, str)
                else list(vocal_language)
            )
            texts, lyric_strs = self.format_rows(
                prompts,
                lyric_list,
                languages,
                audio_duration,
                instruction,
                bpm,
                keyscale,
                timesignature,
            )
            text_inputs = self.tokenizer(
                texts,
                padding="longest",
                pad_to_multiple_of=self.text_pad_multiple,
                truncation=True,
                max_length=max_text_length,
                return_tensors="pt",
            )
            lyric_inputs = self.tokenizer(
                lyric_strs,
                padding="longest",
                pad_to_multiple_of=self.lyrics_pad_multiple,
                truncation=True,
                max_length=max_lyric_length,
                return_tensors="pt",
            )
            text_input_ids = text_inputs.input_ids.to(device)
            lyric_input_ids = lyric_inputs.input_ids.to(device)
            text_hidden_states = self.text_encoder(input_ids=text_input_ids).last_hidden_state
            lyric_hidden_states = self.text_encoder.get_input_embeddings()(lyric_input_ids)
            return (
                text_hidden_states,
                text_inputs.attention_mask.to(device).bool(),
                lyric_hidden_states,
                lyric_inputs.attention_mask.to(device).bool(),
            )

    return BucketedAceStepPipeline
