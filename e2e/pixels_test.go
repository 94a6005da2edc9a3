package e2e_test

import (
	"image"
	"image/color"
	"image/draw"
	"testing"
)

// drawDemo paints a 1280×800 stand-in of the demo sign-in page: the blue
// background, the white 360×120 button at the centre and a blue label on it.
func drawDemo(bg, button color.RGBA) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, 1280, 800))
	draw.Draw(img, img.Bounds(), &image.Uniform{bg}, image.Point{}, draw.Src)
	draw.Draw(img, image.Rect(460, 340, 820, 460), &image.Uniform{button}, image.Point{}, draw.Src)
	for x := 575; x < 705; x += 3 { // the label: thin strokes, a third of its box
		draw.Draw(img, image.Rect(x, 385, x+1, 415), &image.Uniform{bg}, image.Point{}, draw.Src)
	}
	return img
}

// TestDemoPageProblem checks the pixel check itself: it accepts the demo
// page (with small colour differences) and refuses other screens, so that
// the end-to-end tests that use it can fail.
func TestDemoPageProblem(t *testing.T) {
	signedIn := color.RGBA{0x2e, 0x7d, 0x32, 0xff}
	black := color.RGBA{0, 0, 0, 0xff}
	blank := drawDemo(white, white)
	noButton := drawDemo(demoBlue, demoBlue)
	tests := []struct {
		name string
		img  image.Image
		ok   bool
	}{
		{"demo page", drawDemo(demoBlue, white), true},
		{"demo page, colours a little off", drawDemo(color.RGBA{0x22, 0x6b, 0xdc, 0xff}, color.RGBA{0xf4, 0xf4, 0xf4, 0xff}), true},
		{"signed-in page", drawDemo(signedIn, signedIn), false},
		{"black screen", drawDemo(black, black), false},
		{"blank white page", blank, false},
		{"blue without the button", noButton, false},
		{"small screen", image.NewRGBA(image.Rect(0, 0, 320, 200)), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := demoPageProblem(tt.img)
			if got := p == ""; got != tt.ok {
				t.Errorf("demoPageProblem = %q, want ok %v", p, tt.ok)
			}
		})
	}
}
