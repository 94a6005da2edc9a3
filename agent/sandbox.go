package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	proto "github.com/master-controller/mc/agentproto"
)

// sandboxURL is Chromium's report on its own sandbox. A machine's managed
// policy blocks chrome://* but this page (confine's URLAllowlist).
const sandboxURL = "chrome://sandbox"

// sandboxPoll is how often the agent looks whether chrome://sandbox has
// rendered its verdict (its script fills the page in after load).
const sandboxPoll = 50 * time.Millisecond

// sandboxScript returns the rendered page: its table's rows (the cells'
// text) and its verdict, or null while the verdict is not there yet; or the
// error page's address when the page was refused (a policy that blocks it).
const sandboxScript = `(() => {
	if (location.protocol === "chrome-error:") return {refused: location.href};
	const v = document.getElementById("evaluation");
	if (!v || !v.textContent.trim()) return null;
	return {
		rows: Array.from(document.querySelectorAll("#sandbox-status tr"),
			tr => Array.from(tr.cells, td => td.textContent.trim())),
		verdict: v.textContent.trim(),
	};
})()`

// sandboxPage is what sandboxScript returns.
type sandboxPage struct {
	Rows    [][]string `json:"rows"`
	Verdict string     `json:"verdict"`
	Refused string     `json:"refused"`
}

// The two verdicts of chrome://sandbox (Chromium 156).
const (
	sandboxAdequate    = "You are adequately sandboxed."
	sandboxNotAdequate = "You are NOT adequately sandboxed."
)

// Sandbox reads chrome://sandbox in a background tab of the agent's own
// (the visible tab stays as it is; KeepOneWindow leaves the tab open),
// waits until the page shows its verdict, polling every sandboxPoll until
// ctx ends, and closes the tab again, whatever happened.
func (c *cdp) Sandbox(ctx context.Context) (proto.BrowserSandbox, error) {
	id, err := c.createOwnTarget(ctx, map[string]any{"url": sandboxURL, "background": true})
	if err != nil {
		return proto.BrowserSandbox{}, fmt.Errorf("open %s: %w", sandboxURL, err)
	}
	defer func() { _ = c.closeOwnTarget(ctx, id) }() // a failure leaves a background tab, no more
	var page sandboxPage
	err = c.attach(ctx, id, func(call func(string, any, any) error) error {
		tick := time.NewTicker(sandboxPoll)
		defer tick.Stop()
		for {
			var res struct {
				Result struct {
					Value *sandboxPage `json:"value"`
				} `json:"result"`
				Exception *struct {
					Text string `json:"text"`
				} `json:"exceptionDetails"`
			}
			if err := call("Runtime.evaluate", map[string]any{"expression": sandboxScript, "returnByValue": true}, &res); err != nil {
				return err
			}
			if res.Exception != nil {
				return fmt.Errorf("evaluate: %s", res.Exception.Text)
			}
			if res.Result.Value != nil {
				page = *res.Result.Value
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("wait for the verdict: %w", ctx.Err())
			case <-tick.C:
			}
		}
	})
	if err != nil {
		return proto.BrowserSandbox{}, fmt.Errorf("read %s: %w", sandboxURL, err)
	}
	return parseSandboxPage(page)
}

// parseSandboxPage turns the rendered page into the API's answer. A page
// that does not look as expected (no rows, a row that is not a name and a
// status, a verdict of neither kind) is an error, not a guess.
func parseSandboxPage(p sandboxPage) (proto.BrowserSandbox, error) {
	if p.Refused != "" {
		return proto.BrowserSandbox{}, fmt.Errorf("read %s: refused (%s): does the browser's policy block it?", sandboxURL, p.Refused)
	}
	if len(p.Rows) == 0 {
		return proto.BrowserSandbox{}, errors.New("read " + sandboxURL + ": no rows")
	}
	var s proto.BrowserSandbox
	for _, r := range p.Rows {
		if len(r) != 2 || r[0] == "" {
			return proto.BrowserSandbox{}, fmt.Errorf("read %s: row %q is not a name and a status", sandboxURL, r)
		}
		on := r[1] != "" && r[1] != "No" && r[1] != "None"
		s.Layers = append(s.Layers, proto.SandboxLayer{Name: r[0], Status: r[1], On: on})
	}
	switch p.Verdict {
	case sandboxAdequate:
		s.Adequate = true
	case sandboxNotAdequate:
	default:
		return proto.BrowserSandbox{}, fmt.Errorf("read %s: unknown verdict %q", sandboxURL, p.Verdict)
	}
	return s, nil
}
