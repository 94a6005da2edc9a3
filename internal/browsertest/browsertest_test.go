package browsertest_test

import (
	"image"
	"image/color"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/master-controller/mc/internal/browsertest"
)

// page has a 200×100 canvas (left half red, right half green) shown scaled
// ×3 and offset on the page, and records where mouse presses land in the
// canvas's own coordinates.
const page = `<!doctype html>
<html><body style="margin:0" data-state="ready">
<div id="screen" style="padding: 37px 0 0 53px">
<canvas width="200" height="100" style="width:600px;height:300px"></canvas>
</div>
<script>
const c = document.querySelector('canvas');
const g = c.getContext('2d');
g.fillStyle = '#ff0000'; g.fillRect(0, 0, 100, 100);
g.fillStyle = '#00ff00'; g.fillRect(100, 0, 100, 100);
window.presses = [];
c.addEventListener('mousedown', (e) => {
  const r = c.getBoundingClientRect();
  window.presses.push([Math.floor((e.clientX - r.left) * c.width / r.width),
                       Math.floor((e.clientY - r.top) * c.height / r.height), e.buttons]);
});
</script>
</body></html>`

func TestBrowser(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		opt  browsertest.Options
	}{
		{"default", browsertest.Options{Width: 1000, Height: 700}},
		{"host network", browsertest.Options{Width: 1000, Height: 700, HostNetwork: true}},
	} {
		t.Run(tt.name, func(t *testing.T) { testBrowser(t, tt.opt) })
	}
}

func testBrowser(t *testing.T, opt browsertest.Options) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(page))
	}))
	t.Cleanup(srv.Close)
	b := browsertest.NewWith(t, opt)
	if opt.HostNetwork && b.Isolated() {
		t.Errorf("Isolated with HostNetwork: got true, want false")
	}
	b.Open(srv.URL)
	b.WaitState("ready")
	var viewport string
	b.MustEval("innerWidth + 'x' + innerHeight + '@' + devicePixelRatio", &viewport)
	if viewport != "1000x700@1" {
		t.Errorf("viewport: got %s, want 1000x700@1", viewport)
	}

	if w, h := b.CanvasSize(); w != 200 || h != 100 {
		t.Errorf("CanvasSize: got %dx%d, want 200x100", w, h)
	}
	b.WaitCanvas("red at the left", func(img image.Image) bool {
		return color.RGBAModel.Convert(img.At(0, 0)) == color.RGBA{255, 0, 0, 255}
	})
	img := b.CanvasImage()
	if got := img.Bounds().Size(); got.X != 200 || got.Y != 100 {
		t.Errorf("CanvasImage size: got %v, want 200x100", got)
	}
	pixels := []struct {
		x, y int
		want color.RGBA
	}{
		{10, 10, color.RGBA{255, 0, 0, 255}},
		{99, 99, color.RGBA{255, 0, 0, 255}},
		{100, 0, color.RGBA{0, 255, 0, 255}},
		{199, 50, color.RGBA{0, 255, 0, 255}},
	}
	for _, p := range pixels {
		if got := color.RGBAModel.Convert(img.At(p.x, p.y)); got != p.want {
			t.Errorf("CanvasImage at (%d,%d): got %v, want %v", p.x, p.y, got, p.want)
		}
	}
	shot := b.Screenshot("canvas")
	if got := shot.Bounds().Size(); got.X != 600 || got.Y != 300 {
		t.Errorf("Screenshot size: got %v, want 600x300 (as shown)", got)
	}

	clicks := [][2]int{{0, 0}, {150, 25}, {199, 99}, {73, 61}}
	for _, c := range clicks {
		b.ClickCanvas(c[0], c[1])
	}
	var presses [][3]int
	b.MustEval("window.presses", &presses)
	if len(presses) != len(clicks) {
		t.Fatalf("presses: got %v, want %d", presses, len(clicks))
	}
	for i, c := range clicks {
		if want := [3]int{c[0], c[1], 1}; presses[i] != want {
			t.Errorf("press %d: got %v, want %v (x, y, buttons)", i, presses[i], want)
		}
	}

	// A second tab is independent of the first.
	tab := b.NewTab()
	tab.Open(srv.URL + "/?tab")
	tab.WaitJS("location.search === '?tab'")
	tab.MustEval("innerWidth + 'x' + innerHeight + '@' + devicePixelRatio", &viewport)
	if viewport != "1000x700@1" {
		t.Errorf("viewport of the new tab: got %s, want 1000x700@1", viewport)
	}
	var n int
	tab.MustEval("window.presses.length", &n)
	if n != 0 {
		t.Errorf("presses in the new tab: got %d, want 0", n)
	}
	b.Reload()
	b.WaitJS("window.presses.length === 0")
}
