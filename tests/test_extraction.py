import pytest

from nli_finetune.extraction import count_json_objects, extract_label
from nli_finetune.metrics import classification_metrics
from prompts import TASKS

NLI = TASKS["nli"]
GOOD = '{"thought_process": "Step 1: the premise says so.", "predicted_label": 1}'


@pytest.mark.parametrize("text,expected", [
    (GOOD, (1, "json")),
    # the prompt echoed before the answer: its template JSON has no valid label
    ('Provide ... {"thought_process": "...", "predicted_label": ...} ' + GOOD, (1, "json")),
    # several JSON objects: the first with a valid label wins
    ('{"predicted_label": 0, "thought_process": "x"} {"predicted_label": 1}', (0, "json")),
    # braces and quotes inside strings do not confuse the scanner
    ('{"thought_process": "a {weird} \\"quoted\\" }{ text", "predicted_label": 0}', (0, "json")),
    # markdown fences
    ('```json\n{"thought_process": "t", "predicted_label": 1}\n```', (1, "json")),
    # labels as strings and names
    ('{"thought_process": "t", "predicted_label": "0"}', (0, "json")),
    ('{"thought_process": "t", "predicted_label": "Entailment"}', (1, "json")),
    ('{"thought_process": "t", "predicted_label": "no entailment"}', (0, "json")),
    ('{"thought_process": "t", "predicted_label": 1.0}', (1, "json")),
    # out-of-set labels are invalid, and nothing else says the label
    ('{"thought_process": "t", "predicted_label": 2}', (None, "none")),
    ('{"thought_process": "t", "predicted_label": true}', (None, "none")),
    # truncated JSON: the explicit label field still counts as a phrase
    ('{"thought_process": "step 1: cut off", "predicted_label": 1', (1, "phrase")),
    ('{"thought_process": "step 1: cut off before the lab', (None, "none")),
    # "Step 1:" reasoning text with an explicit final label
    ("Step 1: think. Step 2: more. Final label: 0", (0, "phrase")),
    ("Step 1: the hypothesis is entailed. Step 2: so 1 it is.", (None, "none")),
    ("predicted_label = entailment", (1, "phrase")),
    ("", (None, "none")),
    # a JSON object holding an invalid label is a parse failure, never read again as a phrase
    ('{"thought_process": "t", "predicted_label": "0 or 1"}', (None, "none")),
    ('{"thought_process": "t", "predicted_label": 1.5}', (None, "none")),
    ('{"thought_process": "t", "predicted_label": "0/1"}', (None, "none")),
    ('{"thought_process": "t", "predicted_label": "1,0"}', (None, "none")),
    ('{"thought_process": "so final label: 1", "predicted_label": null}', (None, "none")),
    ('{"thought_process": "so final label: 1", "predicted_label": null} Final label: 0', (None, "none")),
    # a phrase inside a JSON string is not the answer either
    ('{"thought_process": "the final label: 1 seems right"}', (None, "none")),
    ('{"thought_process": "no label field"} Final label: 0', (0, "phrase")),
])
def test_extract_label(text, expected):
    assert extract_label(text, NLI) == expected


def test_other_tasks_plug_in_as_data():
    text = '{"classification": "hate_speech", "confidence": "high", "reasoning": "r"}'
    assert extract_label(text, TASKS["hate_speech"]) == ("hate_speech", "json")
    assert extract_label('{"classification": "maybe"}', TASKS["hate_speech"]) == (None, "none")
    assert TASKS["hate_speech"].normalize_label("normal") == "not_hate"


def test_count_json_objects():
    assert count_json_objects(GOOD) == 1
    assert count_json_objects(GOOD + " " + GOOD + "\n" + GOOD) == 3
    assert count_json_objects('{"a": "}"} trailing {"b": {"c": 1}}') == 2
    assert count_json_objects('{"a": 1') == 0


def test_metrics_on_a_hand_computed_case():
    # true: 1 1 0 0 ; pred: 1 None 0 1
    m = classification_metrics([1, 1, 0, 0], [1, None, 0, 1], labels=[0, 1])
    assert m["accuracy"] == 0.5 and m["parse_failures"] == 1 and m["parse_failure_rate"] == 0.25
    # class 1: tp 1, predicted 2, support 2 -> p .5 r .5 ; class 0: tp 1, predicted 1, support 2 -> p 1 r .5
    assert m["per_class"]["1"]["precision"] == 0.5 and m["per_class"]["0"]["precision"] == 1.0
    assert m["precision_macro"] == 0.75 and m["recall_macro"] == 0.5
    assert m["f1_macro"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["confusion_matrix"] == {"0": {"0": 1, "1": 1, "null": 0}, "1": {"0": 0, "1": 1, "null": 1}}


def test_bootstrap_intervals_hold_the_point_estimate_and_shrink_with_more_data():
    from nli_finetune.metrics import bootstrap_intervals, classification_metrics, majority_baseline
    truth = [0, 1] * 50
    pred = [t if i % 4 else 1 - t for i, t in enumerate(truth)]  # 75% right
    small = bootstrap_intervals(truth, pred, [0, 1], samples=400)
    big = bootstrap_intervals(truth * 8, pred * 8, [0, 1], samples=400)
    point = classification_metrics(truth, pred, [0, 1])
    for key in ("accuracy", "f1_macro"):
        assert small[key][0] < point[key] < small[key][1]
        assert big[key][1] - big[key][0] < small[key][1] - small[key][0]
    assert small == bootstrap_intervals(truth, pred, [0, 1], samples=400)  # seeded
    assert majority_baseline([1, 1, 0]) == 2 / 3


def test_bootstrap_intervals_equal_classification_metrics_over_the_same_resamples():
    """The counted (numpy) bootstrap gives exactly what classification_metrics gives on each resample: the
    same seeded draws (random.Random(seed).randrange), parse failures, three labels, string labels."""
    import random

    from nli_finetune.metrics import bootstrap_intervals, classification_metrics

    def by_resample(y_true, y_pred, labels, samples):
        rng, n, scores = random.Random(0), len(y_true), {"accuracy": [], "f1_macro": []}
        for _ in range(samples):
            picks = [rng.randrange(n) for _ in range(n)]
            metrics = classification_metrics([y_true[i] for i in picks], [y_pred[i] for i in picks], labels)
            for key, values in scores.items():
                values.append(metrics[key])
        return {key: [sorted(v)[int(0.025 * samples)], sorted(v)[min(samples - 1, int(0.975 * samples))]]
                for key, v in scores.items()}
    draw = random.Random(1)
    for n, labels in ((200, [0, 1]), (37, [0, 1, 2]), (5, ["a", "b"]), (1, [0, 1])):
        truth = [draw.choice(labels) for _ in range(n)]
        pred = [draw.choice([*labels, None]) for _ in range(n)]
        assert bootstrap_intervals(truth, pred, labels, samples=200) == by_resample(truth, pred, labels, 200)


@pytest.mark.parametrize("text", [
    # issue #22 M6: each of these used to get a label from the phrase fallback
    '{"thought_process": "t", "predicted_label": "0 or 1',
    '"predicted_label": "0 or 1',
    "final label: 1.5",
    "final label: 0/1",
    "The predicted label is 1 or 0, hard to say",
    '{"thought_process": "t", "predicted_label": ".1"}',
    '{"thought_process": "t", "predicted_label": "1..."}',
    "final label: .1",
    "final label: 1...",
    '{"thought_process": "t", "predicted_label": "1',  # cut off inside the value
    "final label: 0. On second thought, final label: 1",  # two phrases that disagree
    # duplicate keys: json keeps the last one; neither is the answer
    '{"thought_process": "t", "predicted_label": 0, "predicted_label": 1}',
])
def test_ambiguous_answers_are_parse_failures(text):
    assert extract_label(text, NLI) == (None, "none")


@pytest.mark.parametrize("text,expected", [
    # in a cut-off object the label field decides, not a phrase inside its reasoning
    ('{"thought_process": "so the final label: 0 here", "predicted_label": 1', (1, "phrase")),
    ('{"thought_process": "the final label: 0 it seems", "predicted_label": ', (None, "none")),
    ('{"thought_process": "t", "predicted_label": 1,', (1, "phrase")),
    ("final label: 1.", (1, "phrase")),
    ("Final label: **0**", (0, "phrase")),
    ('{"thought_process": "t", "predicted_label": 1, "predicted_label": 1}', (1, "json")),
    ('{"thought_process": "t", "predicted_label": "1.0"}', (1, "json")),  # as JSON's 1.0
    ("Premise says {a dog}; so the answer is {\"predicted_label\": 1}", (1, "json")),
])
def test_unambiguous_answers_still_parse(text, expected):
    assert extract_label(text, NLI) == expected


@pytest.mark.parametrize("text", [
    "{" * 20000,
    '{"a": ' * 20000,
    '{"a":' * 20000 + "1" + "}" * 20000,  # deeper than json's recursion limit
    '{"a": "' * 20000,
    "{ x " * 20000,
])
def test_extraction_is_linear_in_the_number_of_braces(text):
    import time
    started = time.perf_counter()
    extract_label(text, NLI)
    count_json_objects(text)
    assert time.perf_counter() - started < 5  # 20,000 braces took 32.9 s when each rescanned the rest


def test_nested_objects_are_found_once_each_in_order():
    from nli_finetune.extraction import iter_json_spans
    text = 'x {"a": {"b": {"c": 1}}, "d": [{"e": 2}]} {"f": "{\\"g\\": 3}"} {"h": 4}'
    found = [obj for _, _, obj in iter_json_spans(text)]
    assert [sorted(o)[0] for o in found] == ["a", "b", "c", "e", "f", "h"]
    assert all(text[s:e + 1].startswith("{") and text[e] == "}" for s, e, _ in iter_json_spans(text))


def test_the_scanner_fed_in_pieces_reads_as_the_whole_text():
    """The per-token JSON stop (generation.JsonCloseTracker) feeds the scanner a token at a time: an escape
    or a string cut between two tokens must read as in the whole text."""
    from nli_finetune.extraction import JsonScanner
    text = '{"a": "b\\"}{", "c": {"d": "\\\\"}, "e": "}"} tail {"f'
    whole = list(JsonScanner().scan(text))
    assert "".join(ch for _, ch in whole) == '{"""{""}""}{"'  # the braces and quotes outside strings
    for pieces in [list(text), *([text[:cut], text[cut:]] for cut in range(len(text)))]:
        scanner, offset, events = JsonScanner(), 0, []
        for piece in pieces:
            events += [(offset + index, ch) for index, ch in scanner.scan(piece)]
            offset += len(piece)
        assert events == whole, pieces


def test_csv_and_json_labels_agree():
    nli = TASKS["nli"]
    assert nli.normalize_label("1.0") == nli.normalize_label(1.0) == 1
    assert nli.normalize_label("0.00") == 0 and nli.normalize_label(".1") is None and nli.normalize_label("1...") is None
