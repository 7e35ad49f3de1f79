"""Engine signals parsed from Prometheus text, as vLLM, SGLang and TGI export it."""

from __future__ import annotations

import pytest

from workers.engine_metrics import (
    SGLANG_METRICS,
    TGI_METRICS,
    VLLM_METRICS,
    EngineSignals,
    parse_engine_signals,
)

MODEL = "meta-llama/Llama-3.1-8B-Instruct"

# Shaped like a vLLM v1 server's /metrics with data parallelism (two engines).
VLLM_SAMPLE = f"""\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{{generation="0"}} 2345.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="{MODEL}"}} 12.0
vllm:num_requests_running{{engine="1",model_name="{MODEL}"}} 9.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{engine="0",model_name="{MODEL}"}} 3.0
vllm:num_requests_waiting{{engine="1",model_name="{MODEL}"}} 1.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{engine="0",model_name="{MODEL}"}} 0.4375
vllm:kv_cache_usage_perc{{engine="1",model_name="{MODEL}"}} 0.8125
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{{engine="0",model_name="{MODEL}"}} 123456.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{{engine="0",le="0.001",model_name="{MODEL}"}} 0.0
vllm:time_to_first_token_seconds_bucket{{engine="0",le="+Inf",model_name="{MODEL}"}} 10.0
vllm:time_to_first_token_seconds_count{{engine="0",model_name="{MODEL}"}} 10.0
vllm:time_to_first_token_seconds_sum{{engine="0",model_name="{MODEL}"}} 1.5
"""


def test_vllm_queue_and_running_add_up_and_kv_takes_the_fullest_engine() -> None:
    signals = parse_engine_signals(VLLM_SAMPLE, VLLM_METRICS)
    assert signals == EngineSignals(queue_depth=4, running=21, kv_usage=0.8125)


def test_series_of_another_model_are_left_out() -> None:
    other = VLLM_SAMPLE + 'vllm:num_requests_waiting{engine="0",model_name="other"} 50.0\n'
    assert parse_engine_signals(other, VLLM_METRICS, model=MODEL).queue_depth == 4
    assert parse_engine_signals(other, VLLM_METRICS).queue_depth == 54
    assert parse_engine_signals(other, VLLM_METRICS, model="other").queue_depth == 50


def test_the_older_vllm_kv_metric_name_is_read_too() -> None:
    old = """\
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="m"} 0.25
"""
    assert parse_engine_signals(old, VLLM_METRICS) == EngineSignals(kv_usage=0.25)


def test_missing_and_nan_metrics_read_as_unknown() -> None:
    text = """\
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="m"} NaN
# TYPE something_else gauge
something_else 3
"""
    assert parse_engine_signals(text, VLLM_METRICS) == EngineSignals()
    assert parse_engine_signals("", VLLM_METRICS) == EngineSignals()


def test_sglang_and_tgi_names() -> None:
    sglang = """\
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="m"} 7
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="m"} 30
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="m"} 0.28
"""
    assert parse_engine_signals(sglang, SGLANG_METRICS) == EngineSignals(7, 30, 0.28)
    tgi = "# TYPE tgi_queue_size gauge\ntgi_queue_size 5\n"
    assert parse_engine_signals(tgi, TGI_METRICS) == EngineSignals(queue_depth=5)


def test_text_that_is_not_prometheus_exposition_is_a_value_error() -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the parser's own message
        parse_engine_signals("<html>not metrics</html>\n", VLLM_METRICS)


@pytest.mark.parametrize(
    ("field", "value"), [("queue_depth", -1), ("running", -2), ("kv_usage", 1.5)]
)
def test_signals_refuse_impossible_values(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        EngineSignals(**{field: value})  # type: ignore[arg-type]
