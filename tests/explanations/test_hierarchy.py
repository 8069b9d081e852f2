"""The clause → word → token tree Glassbox explains Chinese text over."""

from explanations.hierarchy import build_tree, clause_spans, leaves, word_spans


def chars(text):
    return [(i, i + 1) for i, ch in enumerate(text) if not ch.isspace()]


def pieces(text, spans):
    return [text[s:e] for s, e in spans]


def test_clauses_split_at_chinese_and_ascii_punctuation():
    text = "房间很干净，服务一般。价格：偏贵！还会来吗？会;下次见,再见.谢谢、好的"
    assert pieces(text, clause_spans(text)) == [
        "房间很干净，",
        "服务一般。",
        "价格：",
        "偏贵！",
        "还会来吗？",
        "会;",
        "下次见,",
        "再见.",
        "谢谢、",
        "好的",
    ]


def test_punctuation_runs_stay_with_their_clause_and_numbers_are_not_split():
    text = "太差了！！！价格3.5元，1,000次"
    assert pieces(text, clause_spans(text)) == ["太差了！！！", "价格3.5元，", "1,000次"]


def test_words_come_from_jieba_within_each_clause():
    text = "这家酒店的服务态度很好，但是房间太小"
    words = pieces(text, word_spans(text))
    assert "酒店" in words and "服务态度" in words or "服务" in words
    assert "房间" in words and "但是" in words
    assert "".join(words) == text  # nothing lost, nothing doubled


def test_tree_nests_tokens_in_words_in_clauses():
    text = "酒店很好，房间太小。"
    tree = build_tree(text, chars(text))
    assert len(tree) == 2  # two clauses
    first, second = tree
    assert sorted(leaves(first)) == [0, 1, 2, 3, 4]
    assert sorted(leaves(second)) == [5, 6, 7, 8, 9]
    # 酒店 is one word node holding two character tokens.
    assert [0, 1] in first
    assert [5, 6] in second


def test_single_child_levels_are_collapsed():
    assert build_tree("好", [(0, 1)]) == 0
    assert build_tree("好。", [(0, 1), (1, 2)]) == [0, 1]
    assert build_tree("", []) == []


def test_tokens_straddling_words_keep_nodes_contiguous():
    text = "我用iPad2011看书"
    # A model that reads "iPad2011" as one token covering two jieba words.
    spans = [(0, 1), (1, 2), (2, 10), (10, 11), (11, 12)]
    tree = build_tree(text, spans)
    assert sorted(leaves(tree)) == [0, 1, 2, 3, 4]
