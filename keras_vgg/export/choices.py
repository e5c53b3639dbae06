"""Comma-separated choices from the command line or Python (export formats,
LiteRT precisions), checked against what is allowed."""


def parse_choices(values, allowed, what):
    """`values` (a list, or a comma-separated string) as a list in `allowed`'s
    order.

    Raises:
        ValueError: a value is not in `allowed`, or there is none; the message
            names `what` and lists the allowed values.
    """
    if isinstance(values, str):
        values = values.split(",")
    values = [v.strip() for v in values if v.strip()]
    unknown = [v for v in values if v not in allowed]
    if unknown or not values:
        raise ValueError(f"Unknown {what}(s) {unknown or values}. "
                         f"Allowed: {', '.join(allowed)} (comma-separated).")
    return [v for v in allowed if v in values]
