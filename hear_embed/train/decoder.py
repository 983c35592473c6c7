"""Parts trained with the tokenizer and then discarded: the Gumbel-softmax quantizer and the decoder that
reconstructs the log-mel and predicts the teachers' features (one head, or one per teacher). Parameter names follow the reference."""
from __future__ import annotations

import torch
from torch import nn

from hear_embed.config import DecoderConfig
from hear_embed.layers import TransformerLayer, length_mask


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over DDP processes (identity in a single process)."""
    if torch.distributed.is_initialized():
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(tensor)
    return tensor


def gumbel_noise(shape: tuple[int, int, int], seeds: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(batch, time, codes) Gumbel(0, 1) noise; row b is drawn from a generator seeded with ``seeds[b]``,
    so a clip's noise does not depend on which batch or process it lands in."""
    rows = []
    for seed in seeds.tolist():
        generator = torch.Generator(device=device).manual_seed(int(seed))
        uniform = torch.rand(shape[1:], generator=generator, device=device).clamp(1e-10, 1.0 - 1e-7)
        rows.append(-torch.log(-torch.log(uniform)))
    return torch.stack(rows)


class GumbelQuantizer(nn.Module):
    """Code logits -> hard Gumbel-softmax one-hot (straight-through) -> codebook vector -> decoder width.

    The temperature starts at ``initial_temperature`` and is multiplied by ``temperature_decay`` after each
    optimizer step, down to ``min_temperature`` (reference: 2.0, 0.5, 0.999995).
    """

    def __init__(self, num_codes: int, code_vector_size: int, hidden_size: int, initial_temperature: float = 2.0,
                 min_temperature: float = 0.5, temperature_decay: float = 0.999995):
        super().__init__()
        self.code_book = nn.Parameter(torch.randn(1, num_codes, code_vector_size))
        self.linear = nn.Linear(code_vector_size, hidden_size)
        self.register_buffer("temperature", torch.tensor(float(initial_temperature)))
        self.min_temperature, self.temperature_decay = min_temperature, temperature_decay

    def anneal(self) -> None:
        self.temperature.fill_(max(self.min_temperature, float(self.temperature) * self.temperature_decay))

    def forward(self, logits: torch.Tensor, lengths: torch.Tensor, seeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """logits (batch, time, codes), lengths (batch,), seeds (batch,) ->
        decoder input (batch, time, hidden) and the diversity loss: squared distance of the mean soft code
        distribution over valid frames (of all processes) from uniform, summed over codes."""
        logits = logits.float()
        noisy = (logits + gumbel_noise(tuple(logits.shape), seeds, logits.device)) / self.temperature
        soft = torch.softmax(noisy, dim=-1)
        hard = nn.functional.one_hot(soft.argmax(dim=-1), soft.shape[-1]).to(soft.dtype)
        one_hot = hard - soft.detach() + soft
        code_vectors = torch.matmul(one_hot, self.code_book[0])

        valid = length_mask(lengths, logits.shape[1])
        probability_sum = _all_reduce_sum(torch.softmax(logits, dim=-1)[valid].sum(dim=0))
        count = valid.sum().float()
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(count)
        mean_probability = probability_sum / count
        diversity = ((mean_probability - 1.0 / logits.shape[-1]) ** 2).sum()
        return self.linear(code_vectors), diversity


class OutLayer(nn.Module):
    """(batch, time, hidden) -> log-mel (batch, 2 * time, n_mels) and a list of teacher predictions: one
    (batch, time, knowledge_hidden_size) from ``out_linear2`` (the reference's single head), or with
    ``teacher_sizes`` one (batch, time, size) per teacher from ``teacher_heads`` (and no ``out_linear2``)."""

    def __init__(self, config: DecoderConfig, n_mels: int = 128, teacher_sizes: tuple[int, ...] = ()):
        super().__init__()
        self.linear = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size)
        self.out_linear = nn.Linear(config.hidden_size, 2 * n_mels)
        if teacher_sizes:
            self.teacher_heads = nn.ModuleList(nn.Linear(config.hidden_size, size) for size in teacher_sizes)
        else:
            self.out_linear2 = nn.Linear(config.hidden_size, config.knowledge_hidden_size)

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        hidden = self.layer_norm(nn.functional.gelu(self.linear(hidden)))
        batch, time, _ = hidden.shape
        heads = self.teacher_heads if hasattr(self, "teacher_heads") else [self.out_linear2]
        return self.out_linear(hidden).view(batch, 2 * time, -1), [head(hidden) for head in heads]


class Decoder(nn.Module):
    """Relative-position transformer layers + :class:`OutLayer`; output lengths are twice the input's."""

    def __init__(self, config: DecoderConfig = DecoderConfig(), teacher_sizes: tuple[int, ...] = ()):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerLayer(config.hidden_size, config.intermediate_size, config.num_attention_heads,
                             config.dropout_probability, config.max_length)
            for _ in range(config.num_transformer_layers))
        self.out_layer = OutLayer(config, teacher_sizes=teacher_sizes)

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """hidden (batch, time, hidden) -> log-mel (batch, 2 time, n_mels), teacher predictions [(batch, time, k_i)],
        (batch,) 2 * lengths."""
        key_mask = length_mask(lengths, hidden.shape[1])
        for layer in self.layers:
            hidden = layer(hidden, key_mask)
        log_mel, knowledge = self.out_layer(hidden)
        return log_mel, knowledge, 2 * lengths
