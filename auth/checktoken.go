package auth

import (
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// checkUse is the "use" claim of a check-page token: it keeps check tokens and room tokens
// apart although the same keys sign both.
const checkUse = "check"

// checkJWT is a check-page token's claims: use, exp and iat.
type checkJWT struct {
	Use string `json:"use"`
	jwt.RegisteredClaims
}

// MintCheck signs a token for the connection check page (/check), valid until expires,
// with the first room signing key (JWT HS256, claims use="check", exp, iat). It grants
// nothing but short-lived TURN credentials for that page, and no room. Errors: expires is
// not after now.
func (t *RoomTokens) MintCheck(expires time.Time) (string, error) {
	if !expires.After(t.now()) {
		return "", fmt.Errorf("%w: the check link must expire in the future", ErrTokenInvalid)
	}
	claims := checkJWT{Use: checkUse, RegisteredClaims: jwt.RegisteredClaims{
		ExpiresAt: jwt.NewNumericDate(expires), IssuedAt: jwt.NewNumericDate(t.now())}}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString((*t.keys.Load())[0])
	if err != nil {
		return "", fmt.Errorf("auth: sign check token: %w", err)
	}
	return s, nil
}

// VerifyCheck checks a check-page token against every signing key and returns its expiry.
// Errors: ErrTokenInvalid (not a JWT, another signature, or not a check token: a room
// token is refused), ErrTokenExpired (exp is not after now; exact, no leeway).
func (t *RoomTokens) VerifyCheck(token string) (time.Time, error) {
	var claims checkJWT
	keys := jwt.VerificationKeySet{}
	for _, k := range *t.keys.Load() {
		keys.Keys = append(keys.Keys, k)
	}
	_, err := jwt.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return keys, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), jwt.WithoutClaimsValidation(), jwt.WithStrictDecoding())
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %v", ErrTokenInvalid, shortJWTError(err))
	}
	if claims.Use != checkUse || claims.ExpiresAt == nil {
		return time.Time{}, fmt.Errorf("%w: not a check link", ErrTokenInvalid)
	}
	exp := claims.ExpiresAt.Time
	if !exp.After(t.now()) {
		return exp, ErrTokenExpired
	}
	return exp, nil
}
