# Launch the app in this process on the tiny test model, take one round through /step with gradio_client,
# and read that round's records from the JSON the endpoint returns (the trace format).
from gradio_client import Client

from app.main import build_demo
from core.specdec.trace import parse_trace

demo = build_demo()
demo.launch(prevent_thread_lock=True, quiet=True)
try:
    client = Client(demo.local_url, verbose=False)
    *_, status, trace = client.predict(prompt="the cat sat on the mat. the cat sat on the", chat=False,
                                       target="tiny-llama", drafter="ngram", gamma=4, max_new_tokens=8,
                                       api_name="/step")
    print(status)  # "1 round, … tokens so far."
    for entry in trace["records"]:  # {"type": "step", "data": StepRecord.to_dict()}
        r = entry["data"]
        drafted = [(t["text"], t["decision"]) for t in r["drafted"]]
        print(f"round {r['step']}: drafted {drafted}, accepted {r['accepted']}, committed {r['committed_text']!r}")
    print(parse_trace(trace).describe())  # the same JSON loads back as a Trace
finally:
    demo.close()
